"""Helpers shared by the tests (not tests themselves): reference decoders, fake-device launchers, cached runs."""
