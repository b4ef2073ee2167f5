// Calls to the proxy's web API with the session cookie (sent by the browser; HttpOnly, so this
// code never sees it) and the session's CSRF token on every call that changes state.

export class ApiError extends Error {
  constructor(public status: number, public code: string, message: string) {
    super(message);
  }
}

export interface Session {
  user: string;
  cluster: string;
  roles: string[];
  logins: string[];
  expires: string;
  cert_expires: string;
  csrf_token: string;
}

let csrf = "";

export function csrfToken(): string {
  return csrf;
}

export async function call<T>(method: string, path: string, body?: unknown,
                              params?: Record<string, string>): Promise<T> {
  const query = params ? "?" + new URLSearchParams(
    Object.entries(params).filter(([, v]) => v !== "")).toString() : "";
  const headers: Record<string, string> = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
  const response = await fetch(path + query, {
    method, headers, credentials: "same-origin", cache: "no-store",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let payload: any = null;
  try { payload = text ? JSON.parse(text) : null; } catch { payload = null; }
  if (!response.ok) {
    const error = payload?.error ?? {};
    throw new ApiError(response.status, String(error.code ?? "internal"),
      String(error.message ?? `HTTP ${response.status}`));
  }
  return payload as T;
}

export async function currentSession(): Promise<Session | null> {
  try {
    const session = await call<Session>("GET", "/v1/webapi/sessions");
    csrf = session.csrf_token;
    return session;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return null;
    throw err;
  }
}

export async function login(user: string, password: string, otp: string,
                            webauthn?: Record<string, unknown>): Promise<Session> {
  const session = await call<Session>("POST", "/v1/webapi/sessions",
    { user, password, otp, ...(webauthn ? { webauthn } : {}) });
  csrf = session.csrf_token;
  return session;
}

export async function renew(): Promise<Session> {
  return call<Session>("POST", "/v1/webapi/sessions/renew");
}

export async function logout(): Promise<void> {
  await call("DELETE", "/v1/webapi/sessions");
  csrf = "";
}

export const user = <T>(path: string, params?: Record<string, string>) =>
  call<T>("GET", `/v1/webapi/user/${path}`, undefined, params);
