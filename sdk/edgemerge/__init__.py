"""edgemerge: merge several trained CNNs into one compact multi-task model and run it on CPU edge boards.

Typical use from Python::

    import edgemerge
    rt = edgemerge.Runtime("merged.emm")
    logits = rt.run("fashion", x)          # x: float32 NHWC batch
"""
__version__ = "0.1.0"

from edgemerge.errors import EdgemergeError  # noqa: E402


def __getattr__(name):
    # Heavy or compiled pieces load on first use, so `import edgemerge` stays cheap for the CLI.
    if name == "Runtime":
        from edgemerge.runtime import Runtime
        return Runtime
    if name in ("read_emm", "write_emm"):
        from edgemerge import emm
        return getattr(emm, name)
    raise AttributeError(f"module 'edgemerge' has no attribute {name!r}")
