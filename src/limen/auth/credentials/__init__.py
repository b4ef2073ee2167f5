"""Local users' credential primitives: password hashing and policy (``passwords``), TOTP
(``otp``), login lockout (``lockout``), one-time sign-up tokens (``signup_tokens``), a user's
record and the login decision over it (``login``) and their storage (``local_users``).

Used by the auth server (``limen.auth.core``); imports nothing else of ``limen.auth`` (an
import-linter contract).
"""
