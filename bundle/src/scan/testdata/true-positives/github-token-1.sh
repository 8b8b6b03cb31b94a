#!/bin/sh
# FAKE token for the secret scanner's tests; not a real GitHub token.
export GH_TOKEN=ghp_FAKEfakeFAKEfake0123456789abcdefABCD
gh release list
