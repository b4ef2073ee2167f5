// Security keys (WebAuthn) in the browser: the JSON options auth gives (binary fields in
// base64url) turned into navigator.credentials.create/get calls, and the key's answer turned
// back into the JSON auth verifies (py_webauthn's shape). Also the "Security keys" page of a
// logged-in user: list, add, remove (/web/mfa), each change confirmed with a second factor the
// user has already (a registered key, or the app's code). Auth decides and audits everything.
import { call, user } from "./api";
import { errorBox, h, mount, showError } from "./dom";

type Json = Record<string, any>;

function fromB64url(text: string): ArrayBuffer {
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4);
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return bytes.buffer;
}

function toB64url(data: ArrayBuffer | null): string | undefined {
  if (!data) return undefined;
  let text = "";
  for (const byte of new Uint8Array(data)) text += String.fromCharCode(byte);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function descriptors(list: Json[] | undefined): PublicKeyCredentialDescriptor[] | undefined {
  return list?.map((d) => ({ ...d, id: fromB64url(d.id) }) as PublicKeyCredentialDescriptor);
}

/** Register a key with creation options from auth; the answer to send back. */
export async function createCredential(options: Json): Promise<Json> {
  const publicKey: PublicKeyCredentialCreationOptions = {
    ...options,
    challenge: fromB64url(options.challenge),
    user: { ...options.user, id: fromB64url(options.user.id) },
    excludeCredentials: descriptors(options.excludeCredentials),
  } as PublicKeyCredentialCreationOptions;
  const credential = await navigator.credentials.create({ publicKey }) as PublicKeyCredential | null;
  if (!credential) throw new Error("the security key gave no answer");
  const response = credential.response as AuthenticatorAttestationResponse;
  return {
    id: credential.id, rawId: toB64url(credential.rawId), type: credential.type,
    response: {
      clientDataJSON: toB64url(response.clientDataJSON),
      attestationObject: toB64url(response.attestationObject),
      transports: response.getTransports ? response.getTransports() : [],
    },
    clientExtensionResults: credential.getClientExtensionResults(),
  };
}

/** Answer a login challenge (request options from auth) with a key; the answer to send. */
export async function getAssertion(options: Json): Promise<Json> {
  const publicKey: PublicKeyCredentialRequestOptions = {
    ...options,
    challenge: fromB64url(options.challenge),
    allowCredentials: descriptors(options.allowCredentials),
  } as PublicKeyCredentialRequestOptions;
  const credential = await navigator.credentials.get({ publicKey }) as PublicKeyCredential | null;
  if (!credential) throw new Error("the security key gave no answer");
  const response = credential.response as AuthenticatorAssertionResponse;
  return {
    id: credential.id, rawId: toB64url(credential.rawId), type: credential.type,
    response: {
      clientDataJSON: toB64url(response.clientDataJSON),
      authenticatorData: toB64url(response.authenticatorData),
      signature: toB64url(response.signature),
      userHandle: toB64url(response.userHandle),
    },
    clientExtensionResults: credential.getClientExtensionResults(),
  };
}

/** The security key's answer for a login of `name` (the password is checked first). */
export async function keyLoginAnswer(name: string, password: string): Promise<Json> {
  const begun = await call<{ webauthn: Json }>("POST", "/v1/webapi/login/webauthn/begin",
    { user: name, password });
  return getAssertion(begun.webauthn);
}

interface Factor { name: string; type: string; added: number | null; last_used: number | null; }

const when = (t: number | null) => (t ? new Date(t * 1000).toISOString().slice(0, 16).replace("T", " ") : "-");

/** The proof a change needs: the app's code when typed, else a registered key's answer. */
async function proof(code: string): Promise<Json | null> {
  if (code) return { otp: code };
  const confirm = await call<{ otp: boolean; webauthn: Json | null }>("POST",
    "/v1/webapi/user/mfa/confirm/begin", {});
  if (confirm.webauthn) return { webauthn: await getAssertion(confirm.webauthn) };
  if (confirm.otp) throw new Error("type the code of your authenticator app to confirm");
  return null;
}

/** /web/mfa: the user's second factors, a form to add a key, a button to remove each. */
export async function keysPage(): Promise<void> {
  const error = errorBox();
  const rows = h("tbody", { id: "factors" });
  const name = h("input", { id: "key-name", name: "key-name", required: true, maxlength: 64 });
  const code = h("input", { id: "confirm-otp", inputmode: "numeric", autocomplete: "one-time-code",
    maxlength: 10 });
  const add = h("button", { id: "add-key", type: "submit" }, "Add security key");
  const form = h("form", { class: "card" }, h("label", { for: "key-name" }, "Name of the new key"),
    name, h("label", { for: "confirm-otp" },
      "Confirm with your authenticator app's code (or leave empty to confirm with a registered key)"),
    code, add);
  const refresh = async () => {
    const listed = await user<{ items: Factor[] }>("mfa");
    rows.replaceChildren(...listed.items.map((f) => {
      const remove = h("button", { type: "button", class: "remove", "data-name": f.name }, "Remove");
      remove.addEventListener("click", async () => {
        error.hidden = true;
        try {
          await call("POST", "/v1/webapi/user/mfa/remove",
            { name: f.name, proof: await proof(code.value) });
          code.value = "";
          await refresh();
        } catch (err) {
          showError(error, err);
        }
      });
      return h("tr", { "data-factor": f.name }, h("td", {}, f.name), h("td", {}, f.type),
        h("td", {}, when(f.added)), h("td", {}, when(f.last_used)), h("td", {}, remove));
    }));
  };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    add.disabled = true;
    try {
      const confirmed = await proof(code.value);
      const begun = await call<{ webauthn: Json }>("POST", "/v1/webapi/user/mfa/register/begin",
        { name: name.value });
      const answer = await createCredential(begun.webauthn);
      await call("POST", "/v1/webapi/user/mfa/register",
        { name: name.value, webauthn: answer, proof: confirmed });
      name.value = "";
      code.value = "";
      await refresh();
    } catch (err) {
      showError(error, err);
    } finally {
      add.disabled = false;
    }
  });
  mount(h("h1", {}, "Second factors"),
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Type"),
      h("th", {}, "Added"), h("th", {}, "Last used"), h("th", {}, ""))), rows),
    form, error);
  try {
    await refresh();
  } catch (err) {
    showError(error, err);
  }
}
