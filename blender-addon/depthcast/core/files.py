"""Files written whole or not at all, bpy-free."""
import os


def write_atomic(path, data):
    """Writes ``data`` (bytes) to ``path`` through a temporary name beside it, so a reader or a
    crash never sees half a file."""
    tmp = path + ".part"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
