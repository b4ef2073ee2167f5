// The login page (password + one-time code, or a security key: ./webauthn) and the only
// place that follows a `redirect`
// parameter: a path of this proxy's web UI only, never another host (no open redirect).
import { currentSession, login } from "./api";
import { appOf, openApp } from "./apps";
import { errorBox, h, mount, showError } from "./dom";
import { ssoButtons } from "./sso";
import { keyLoginAnswer } from "./webauthn";

export function safeRedirect(value: string | null): string {
  if (!value || !value.startsWith("/web") || value.startsWith("//") || value.includes("\\")) {
    return "/web/";
  }
  try {
    const url = new URL(value, window.location.origin);
    if (url.origin !== window.location.origin || !url.pathname.startsWith("/web")) return "/web/";
    return url.pathname + url.search;
  } catch {
    return "/web/";
  }
}

/** After a login (or with a session already): an app the redirect names, else a web UI
 * path, else the start page. */
export async function afterLogin(go: (path: string) => void): Promise<void> {
  const redirect = new URLSearchParams(window.location.search).get("redirect");
  const wanted = await appOf(redirect);
  if (wanted) {
    await openApp(wanted.app, wanted.path);
    return;
  }
  go(safeRedirect(redirect));
}

export async function loginPage(go: (path: string) => void): Promise<void> {
  if (new URLSearchParams(window.location.search).get("redirect") && await currentSession()) {
    await afterLogin(go);  // logged in already: straight on (an app sends people here)
    return;
  }
  const error = errorBox();
  const user = h("input", { id: "user", name: "user", autocomplete: "username", required: true });
  const password = h("input", { id: "password", name: "password", type: "password",
    autocomplete: "current-password", required: true });
  const otp = h("input", { id: "otp", name: "otp", inputmode: "numeric",
    autocomplete: "one-time-code", pattern: "[0-9]*", maxlength: 10 });
  const submit = h("button", { id: "login", type: "submit" }, "Log in");
  const withKey = h("button", { id: "login-key", type: "button" }, "Log in with a security key");
  const form = h("form", { class: "card" },
    h("h1", {}, "Log in to Limen"),
    h("label", { for: "user" }, "User"), user,
    h("label", { for: "password" }, "Password"), password,
    h("label", { for: "otp" }, "Authenticator code"), otp,
    submit, withKey, error);
  withKey.addEventListener("click", async () => {
    error.hidden = true;
    if (!form.reportValidity()) return;
    withKey.disabled = true;
    try {
      const answer = await keyLoginAnswer(user.value, password.value);
      await login(user.value, password.value, "", answer);
      await afterLogin(go);
    } catch (err) {
      showError(error, err);
      password.value = "";
    } finally {
      withKey.disabled = false;
    }
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    submit.disabled = true;
    try {
      await login(user.value, password.value, otp.value);
      await afterLogin(go);
    } catch (err) {
      showError(error, err);
      password.value = "";
      otp.value = "";
    } finally {
      submit.disabled = false;
    }
  });
  mount(form);
  user.focus();
  const redirect = new URLSearchParams(window.location.search).get("redirect");
  const buttons = await ssoButtons(error, redirect);
  if (buttons) form.append(buttons);
}
