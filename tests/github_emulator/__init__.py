"""A GitHub OAuth + REST emulator for the GitHub single sign-on tests (see ``emulator``)."""
