"""Drives a command through a pseudo-terminal as a person at a keyboard would: waits for
each expected prompt, types the answer, and fails (exit 1, with the transcript) if a prompt
does not come. Usage: pty_dialogue.py SCRIPT.json -- COMMAND ARGS...; SCRIPT is a list of
[prompt substring, answer] pairs (answer null: only wait for the text). Exits with the command's own status after the script."""
import json, os, pty, select, sys, time

script = json.load(open(sys.argv[1]))
cmd = sys.argv[sys.argv.index("--") + 1:]
pid, fd = pty.fork()
if pid == 0:
    os.execvp(cmd[0], cmd)

seen = b""
pending = b""


def read_until(s, timeout=30):
    global pending, seen
    end = time.time() + timeout
    while s.encode() not in pending:
        if time.time() > end:
            sys.stdout.write(seen.decode(errors="replace"))
            sys.exit("no prompt %r came" % s)
        r, _, _ = select.select([fd], [], [], 0.2)
        if not r:
            continue
        try:
            d = os.read(fd, 4096)
        except OSError:
            d = b""
        if not d:
            sys.stdout.write(seen.decode(errors="replace"))
            sys.exit("the command ended before the prompt %r" % s)
        pending += d
        seen += d
    pending = pending[pending.index(s.encode()) + len(s):]


for prompt, answer in script:
    read_until(prompt)
    if answer is None:  # only wait for this text
        continue
    time.sleep(0.05)
    os.write(fd, (answer + "\n").encode())

# Drain until the command exits.
while True:
    r, _, _ = select.select([fd], [], [], 0.5)
    if r:
        try:
            d = os.read(fd, 4096)
        except OSError:
            d = b""
        if not d:
            break
        seen += d
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
else:
    status = 0
_, status = os.waitpid(pid, 0) if not done else (pid, status)
sys.stdout.write(seen.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
