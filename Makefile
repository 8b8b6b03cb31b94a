# Convenience targets; the scripts are the source of truth.
.PHONY: image test demo
image:
	bash scripts/image.sh
test:
	bash scripts/check.sh
demo:
	bash scripts/demo.sh
