// Reads credentials from the environment at run time.
const token = process.env.GITHUB_TOKEN;
const apiKey = process.env.API_KEY ?? "";
const { password, username } = req.body;
const secret = await secretsManager.getSecretValue({ SecretId: "prod/db" });

export function authHeaders(accessToken) {
  return { Authorization: `Bearer ${accessToken}` };
}

if (password === confirmPassword && password.length >= 12) {
  form.passwordInput.classList.remove("error");
}
module.exports = { tokenEndpoint: "https://auth.internal/oauth2/v1/token" };
