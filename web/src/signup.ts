// Sign-up from the invite link (https://proxy/web/signup/TOKEN?ca_pin=..., as lmctl users add
// prints it; ?token=TOKEN works too): choose a password, enrol the authenticator from the QR
// code (or the secret as text), confirm with its current code; or register a security key
// instead (./webauthn).
import QRCode from "qrcode";
import { call } from "./api";
import { errorBox, h, mount, showError } from "./dom";
import { createCredential } from "./webauthn";

interface Enrolment { user: string; second_factor: string; totp_secret: string | null; totp_uri: string | null; }

export function signupToken(): string {
  const fromPath = window.location.pathname.replace(/^\/web\/signup\/?/, "");
  return fromPath || new URLSearchParams(window.location.search).get("token") || "";
}

export async function signupPage(go: (path: string) => void): Promise<void> {
  const token = signupToken();
  const error = errorBox();
  mount(h("h1", {}, "Sign up"), error);
  let enrolment: Enrolment;
  try {
    enrolment = await call<Enrolment>("POST", "/v1/webapi/signup/begin", { token });
  } catch (err) {
    showError(error, err);
    return;
  }
  const password = h("input", { id: "password", type: "password", autocomplete: "new-password", required: true });
  const confirm = h("input", { id: "password2", type: "password", autocomplete: "new-password", required: true });
  const otp = h("input", { id: "otp", inputmode: "numeric", autocomplete: "one-time-code", maxlength: 10 });
  const submit = h("button", { id: "signup", type: "submit" }, "Sign up");
  const enrol = h("div", { class: "enrol" });
  const useKey = h("input", { id: "use-key", type: "checkbox" });
  const keyName = h("input", { id: "key-name", value: "key", maxlength: 64 });
  const keyChoice = h("div", { class: "enrol-key" },
    h("label", { for: "use-key" }, useKey, " Use a security key instead of an authenticator app"),
    h("label", { for: "key-name" }, "Name of the key"), keyName);
  if (enrolment.totp_uri && enrolment.totp_secret) {
    const qr = h("img", { id: "qr", alt: "QR code of the authenticator secret", width: 200, height: 200 });
    qr.src = await QRCode.toDataURL(enrolment.totp_uri, { width: 200, margin: 1 });
    enrol.append(h("p", {}, "Scan this code with your authenticator app, or type the secret:"), qr,
      h("p", {}, h("code", { id: "totp-secret" }, enrolment.totp_secret)),
      h("label", { for: "otp" }, "Code from the app"), otp);
  }
  const form = h("form", { class: "card" }, h("p", {}, "User ", h("strong", { id: "signup-user" }, enrolment.user)),
    h("label", { for: "password" }, "Password"), password,
    h("label", { for: "password2" }, "Password again"), confirm,
    enrolment.second_factor === "otp" ? keyChoice : null, enrol, submit, error);
  useKey.addEventListener("change", () => { enrol.hidden = useKey.checked; });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    if (password.value !== confirm.value) {
      showError(error, "the two passwords differ");
      return;
    }
    submit.disabled = true;
    try {
      if (useKey.checked) {
        const begun = await call<{ webauthn: Record<string, any> }>("POST", "/v1/webapi/signup/begin",
          { token, password: password.value, mfa: "webauthn" });
        const answer = await createCredential(begun.webauthn);
        await call("POST", "/v1/webapi/signup", { token, password: password.value,
          webauthn: answer, key_name: keyName.value || "key" });
      } else {
        await call("POST", "/v1/webapi/signup", { token, password: password.value,
          ...(enrolment.totp_secret ? { otp: otp.value } : {}) });
      }
      mount(h("h1", {}, "Signed up"), h("p", { id: "signed-up" }, `Welcome, ${enrolment.user}. `,
        h("a", { href: "/web/login", id: "to-login" }, "Log in")));
      document.getElementById("to-login")!.addEventListener("click", (e) => { e.preventDefault(); go("/web/login"); });
    } catch (err) {
      showError(error, err);
    } finally {
      submit.disabled = false;
    }
  });
  mount(h("h1", {}, "Sign up"), form);
}
