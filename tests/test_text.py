"""edgemerge.text.printable: what every command uses to print a name that came from a file."""
from edgemerge.text import printable


def test_plain_names_are_unchanged():
    assert printable("conv2d_1/kernel:0 a-b.c") == "conv2d_1/kernel:0 a-b.c"


def test_control_characters_backslash_and_non_ascii_are_escaped_like_em_run():
    assert printable("a\x1b[2Jb\r\nc\\") == "a\\x1B[2Jb\\x0D\\x0Ac\\x5C"
    assert printable("é") == "\\xC3\\xA9"          # the UTF-8 bytes, as em_run --info prints them
    assert printable(7) == "7"
