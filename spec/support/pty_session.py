"""Drives a program through a pseudo-terminal, as a user at a keyboard would
(for spec/repl_spec.lua: line editing, history and completion only happen on a
terminal). Usage: pty_session.py PROGRAM PROMPT KEYS...
Each KEYS argument is typed after the program shows PROMPT again (Python
string escapes: \\r is Enter, \\t Tab, \\x1b[A the up arrow). The whole
transcript is written to stdout once the program exits (after end of input,
Ctrl-D) or after a timeout."""
import os
import pty
import select
import sys
import time

program, prompt = sys.argv[1], sys.argv[2].encode()
keys = [k.encode().decode("unicode_escape").encode("latin-1") for k in sys.argv[3:]]
pid, fd = pty.fork()
if pid == 0:
    os.execv(program, [program])
out = b""


def read_until(pred, timeout=60.0):
    global out
    end = time.time() + timeout
    while time.time() < end and not pred():
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                data = os.read(fd, 4096)
            except OSError:
                return False
            if not data:
                return False
            out += data
    return pred()


for k in keys:
    seen = out.count(prompt)
    if not read_until(lambda: out.count(prompt) > seen):
        break
    os.write(fd, k)
seen = out.count(prompt)
read_until(lambda: out.count(prompt) > seen)
os.write(fd, b"\x04")
read_until(lambda: False, timeout=30.0)  # returns at end of output (the program exited)
try:
    os.waitpid(pid, 0)
except ChildProcessError:
    pass
sys.stdout.write(out.decode("utf-8", "replace"))
