"""Drives a program through a pseudo-terminal, as a user at a keyboard would
(for spec/repl_spec.lua: line editing, history and completion only happen on a
terminal). Usage: pty_session.py PROGRAM PROMPT KEYS...
Each KEYS argument is typed once the program shows PROMPT again and has gone
quiet (its line editor is then waiting for keys). Python string escapes: \\r is
Enter, \\t Tab, \\x1b[A the up arrow. At the end the line is cleared (Ctrl-U)
and input ended (Ctrl-D). The whole transcript is written to stdout. Never
hangs: a program that does not answer within the timeouts is killed, and the
exit status is then 3 (and 4 when a prompt never came)."""
import os
import pty
import select
import signal
import sys
import time

program, prompt = sys.argv[1], sys.argv[2].encode()
keys = [k.encode().decode("unicode_escape").encode("latin-1") for k in sys.argv[3:]]
pid, fd = pty.fork()
if pid == 0:
    os.execv(program, [program])
out = b""
ended = False


def read_for(seconds):
    """Reads what arrives within seconds; False at end of output."""
    global out, ended
    r, _, _ = select.select([fd], [], [], seconds)
    if not r:
        return True
    try:
        data = os.read(fd, 4096)
    except OSError:
        data = b""
    if not data:
        ended = True
        return False
    out += data
    return True


def wait_prompt(count, timeout=60.0):
    """Until the output holds count prompts and then 0.1 s of quiet."""
    end = time.time() + timeout
    while time.time() < end and not ended:
        if out.count(prompt) >= count:
            quiet = len(out)
            read_for(0.1)
            if len(out) == quiet:
                return True
        else:
            read_for(0.1)
    return False


status = 0
for n, k in enumerate(keys):
    if not wait_prompt(n + 1):      # every key ends in Enter: one more prompt each
        status = 4
        break
    os.write(fd, k)
if status == 0 and not wait_prompt(len(keys) + 1):
    status = 4
os.write(fd, b"\x15\x04")
end = time.time() + 30.0
while time.time() < end and not ended:
    read_for(0.2)
if not ended:
    os.kill(pid, signal.SIGKILL)
    status = status or 3
try:
    os.waitpid(pid, 0)
except ChildProcessError:
    pass
sys.stdout.write(out.decode("utf-8", "replace"))
sys.exit(status)
