"""Test support for fastdtm: real Redis processes, a scripted branch server and the node under test."""
