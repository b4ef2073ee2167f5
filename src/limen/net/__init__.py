"""Network plumbing shared by auth, proxy, agents and client: HTTP JSON APIs and addresses."""
