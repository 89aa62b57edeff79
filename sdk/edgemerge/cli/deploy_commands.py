"""The commands that put a model on a board: boards, build, flash and export-c."""
from __future__ import annotations

import os

import click

from edgemerge.cli.common import (
    _check_input_file,
    _echo_json,
    _fail_cleanly,
    main,
)


# ------------------------------------------------------------------------------------------------
@main.command()
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@_fail_cleanly
def boards(as_json):
    """List the board profiles (boards/*.toml) and whether this machine can build for each."""
    from edgemerge.deploy.boards import load_boards, missing_tools, source_root

    profiles = load_boards()
    root = source_root()
    rows = []
    for b in profiles.values():
        row = b.to_dict(root)
        row["missing"] = missing_tools(b, emulator=True)
        rows.append(row)
    if as_json:
        _echo_json(rows)
        return
    table = [("board", "triple", "cpu flags", "blas", "qemu", "ready")]
    for r in rows:
        qemu = f"{r['qemu']['binary']} -cpu {r['qemu']['cpu']}" if r["qemu"] else "- (native)"
        table.append((r["name"], r["triple"], " ".join(r["cpu_flags"]) or "-", r["blas"]["kind"], qemu,
                      "yes" if not r["missing"] else "no"))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    click.echo("")
    for r in rows:
        click.echo(f"{r['name']}: {r['description']}")
        for problem in r["missing"]:
            click.echo(f"  missing: {problem}")


# ------------------------------------------------------------------------------------------------
@main.command()
@click.option("--board", "board_name", required=True, metavar="NAME", help="a board profile (see `edgemerge boards`)")
@click.option("-o", "--output", type=click.Path(file_okay=False), default=None,
              help="install folder (default build/NAME); replaced only when the build succeeded")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None,
              help="parallel compile jobs (default: all cores)")
@click.option("--ctest", "run_ctest", is_flag=True,
              help="also build the C tests and run them (under the board's qemu) before installing")
@click.option("--json", "as_json", is_flag=True, help="print the build manifest as JSON")
@_fail_cleanly
def build(board_name, output, jobs, run_ctest, as_json):
    """Cross-build the C runtime for a board: static library, headers and em_run into DIR.

    Example: edgemerge build --board rpi4-aarch64 -o build/rpi4-aarch64
    """
    from edgemerge.deploy.boards import blas_mismatch, build_board, get_board

    board = get_board(board_name)
    out = output or os.path.join("build", board.name)
    manifest = build_board(board, out, jobs=jobs, ctest=run_ctest, log=lambda m: click.echo(f"{m}...", err=True))
    mismatch = blas_mismatch(manifest)
    if mismatch:
        click.echo(f"warning: {mismatch}", err=True)
    if as_json:
        _echo_json(manifest)
        return
    blas = manifest["blas"]
    simd = manifest["simd"]
    click.echo(f"board {board.name}: {board.description}")
    click.echo(f"  toolchain  {manifest['toolchain'] or 'native (no toolchain file)'}, {manifest['compiler']}")
    static = ", linked static" if manifest["static"] else ""
    click.echo(f"  flags      {' '.join(manifest['c_flags']) or '(none)'}{static}")
    click.echo(f"  blas       {blas['used']}" + (f" ({blas['library']})" if blas["used"] != "none" else
                                                  " (the runtime's own GEMM)"))
    symbols = ", ".join(sorted({k for ks in simd["symbols"].values() for k in ks}))
    click.echo(f"  simd       {', '.join(simd['used'])}"
               + (f" ({symbols})" if symbols else " (portable C kernels only)"))
    for note in manifest["configure_notes"]:
        click.echo(f"  cmake      {note}")
    if manifest["ctest"]:
        t = manifest["ctest"]
        where = f" under {' '.join(t['emulator'])}" if t.get("emulator") else ""
        click.echo(f"  ctest      {t.get('passed', '?')}/{t.get('total', '?')} passed{where}")
    click.echo(f"installed {out}: {', '.join(manifest['files'])} ({manifest['seconds']:.1f} s)")
    run = " ".join([*(manifest["qemu"] or []), os.path.join(out, "em_run")])
    click.echo(f"  try: {run} MODEL.emm --info")


# ------------------------------------------------------------------------------------------------
@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--to", "target_spec", required=True, metavar="ssh://[USER@]HOST[:PORT]/DIR | dir:DIR",
              help="where to install: a device over ssh, or a folder (a mounted SD card)")
@click.option("--board", "board_name", metavar="NAME",
              help="the device's board profile: its `uname -m` is checked, and --with-runtime installs its em_run")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="ssh port (default: the URL's, else 22)")
@click.option("--identity", type=click.Path(dir_okay=False), default=None,
              help="ssh private key to use (only that key: IdentitiesOnly)")
@click.option("--ssh-option", "ssh_options", multiple=True, metavar="KEY=VALUE",
              help="an OpenSSH option passed as `ssh -o KEY=VALUE` (e.g. UserKnownHostsFile=..., ProxyJump=...); "
                   "repeatable; overrides edgemerge's defaults")
@click.option("--with-runtime", is_flag=True,
              help="also install the board's em_run beside the model (built into --runtime-dir if not there)")
@click.option("--runtime-dir", type=click.Path(file_okay=False), default=None,
              help="where the board's build is (or goes): default build/BOARD")
@click.option("--verify", is_flag=True,
              help="run a fixed input per task through em_run on the device and compare with the host runtime")
@click.option("--name", default=None, help="file name on the device (default: MODEL's name)")
@click.option("--limit-rate", type=click.FloatRange(min=1), default=None, metavar="KIB",
              help="send at most KIB KiB/s (slow or shared links)")
@click.option("--connect-timeout", type=click.IntRange(min=1), default=10, show_default=True,
              help="seconds ssh waits for the device")
@click.option("--json", "as_json", is_flag=True, help="print a JSON summary")
@_fail_cleanly
def flash(model, target_spec, board_name, port, identity, ssh_options, with_runtime, runtime_dir, verify, name,
          limit_rate, connect_timeout, as_json):
    """Install MODEL on a device or in a folder, atomically, and check it there.

    \b
    edgemerge flash merged.emm --board rpi4-aarch64 --to ssh://pi@raspberrypi.local/opt/models \\
        [--port 22] [--identity KEY] [--with-runtime] [--verify]
    edgemerge flash merged.emm --to dir:/media/sdcard/models

    Each file goes to a temporary name on the target, its SHA-256 is read back there, and only then is it
    renamed over the old one: an interrupted flash leaves the previous model in place.
    """
    from edgemerge.deploy.boards import get_board
    from edgemerge.deploy.flash import flash as do_flash
    from edgemerge.deploy.flash import parse_target

    _check_input_file(model, "model")
    board = get_board(board_name) if board_name else None
    target = parse_target(target_spec, port=port, identity=identity, ssh_options=list(ssh_options),
                          connect_timeout=connect_timeout)
    result = do_flash(model, target, board=board, with_runtime=with_runtime, verify=verify,
                      runtime_dir=runtime_dir, name=name, limit_kib=limit_rate,
                      log=lambda m: click.echo(f"{m}...", err=True))
    if as_json:
        _echo_json(result)
        return
    where = f" ({result['machine']}, board {result['board']})" if result["machine"] else ""
    click.echo(f"flashed {result['target']}{where} in {result['seconds']:.1f} s")
    for f in result["files"]:
        how = "already there, kept" if f["unchanged"] else "read back on the target"
        click.echo(f"  {f['name']:<24} {f['bytes']:>10} bytes  sha256 {f['sha256']}  ({how})")
    if result["previous_sha256"] and result["previous_sha256"] != result["sha256"]:
        click.echo(f"  replaced the previous {result['name']} (sha256 {result['previous_sha256']})")
    if result["leftovers_removed"]:
        click.echo(f"  removed {result['leftovers_removed']} temporary file(s) of an interrupted flash")
    if result["verify"]:
        for task, v in result["verify"].items():
            click.echo(f"  verify {task}: top-1 {v['top1_device']} (host {v['top1_host']}), max |diff| "
                       f"{v['max_abs_diff']:.2g} <= {v['tolerance']:.2g}: ok")


@main.command(name="export-c")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="the C header to write")
@click.option("--align", "alignment", type=click.IntRange(min=1), default=None,
              help="alignment of the array in bytes: a power of two from the format's 64 (the default) to 4096")
@click.option("--name", default=None, help="C name of the array (default: from the output file name)")
@click.option("--json", "as_json", is_flag=True, help="print a JSON summary")
@_fail_cleanly
def export_c(model, output, alignment, name, as_json):
    """Write MODEL as a const, aligned C array (a header) that the runtime loads in place, e.g. from flash.

    Example: edgemerge export-c merged.emm -o model_data.h --align 64 --name fashion_words
    """
    from edgemerge.deploy.export_c import export_c_header

    _check_input_file(model, "model")
    result = export_c_header(model, output, alignment=alignment, name=name)
    if as_json:
        _echo_json(result)
        return
    click.echo(f"wrote {output}: const unsigned char {result['name']}[{result['bytes']}], aligned to "
               f"{result['alignment']}, format version {result['format_version']}, CRC32 "
               f"{result['crc32']:#010x}")
    click.echo(f"  load: em_model_load({result['name']}, {result['size_macro']}, NULL, &model, &err)")
