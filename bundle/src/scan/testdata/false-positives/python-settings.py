import os

SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]
DATABASES = {"default": {"PASSWORD": os.getenv("DB_PASSWORD", ""), "USER": "app"}}
AUTH_TOKEN_TTL = 3600
password_validators = ["MinimumLengthValidator", "CommonPasswordValidator"]
token = get_token(scope="read:packs")
