"""Zippering same-architecture models: fuse blocks 1..k, calibrate each round, report and pick k."""
