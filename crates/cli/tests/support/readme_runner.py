"""Runs every shell command the README shows, as written, in the README's order, the way an
operator would type them: each through a pseudo-terminal, with a person's answers to the
questions and secret prompts that come, and fails on the first command that fails.

Usage: readme_runner.py README ROOT BINDIR MODULE

What it changes, and nothing else (printed at the start):
  - absolute paths move under ROOT (/etc/ferrohsm -> ROOT/etc/ferrohsm, /srv, /media, /run,
    /var/log), and the TLS listener `hsm1:1792` becomes 127.0.0.1 on a free port;
  - `target/debug/libferrohsm_pkcs11.so` is MODULE (the one this build made);
  - `$EDITOR` is an editor that makes the edits the README says to make (data_dir, socket,
    the TLS listener);
  - `ferrohsm server --config FILE` (the line that runs the server) runs in the background
    until the end;
  - a ```toml block whose first line is `# /path` is written to that path (as the reader would);
  - blocks that install software (sudo, cargo, the benchmarks) are not run: CI runs the demo and
    the tests itself, and installing into the machine is not a test's business.
Files the README's commands read but never make (invoice.pdf, a.txt) are made first.
"""
import os, pty, re, select, shutil, signal, socket, subprocess, sys, time

README, ROOT, BINDIR, MODULE = sys.argv[1:5]
WORK = os.path.join(ROOT, "work")
os.makedirs(WORK, exist_ok=True)
for d in ["etc/ferrohsm", "run/ferrohsm", "var/log", "srv", "media"]:
    os.makedirs(os.path.join(ROOT, d), exist_ok=True)

s = socket.socket()
s.bind(("127.0.0.1", 0))
PORT = s.getsockname()[1]
s.close()

# A person's answers. Secrets: one PED PIN for every key that has one, one challenge secret.
PIN, CHALLENGE = "24681357", "co-challenge-4242"
REWRITES = [
    ("/etc/ferrohsm", ROOT + "/etc/ferrohsm"),
    ("/srv/", ROOT + "/srv/"),
    ("/media/", ROOT + "/media/"),
    ("/run/ferrohsm", ROOT + "/run/ferrohsm"),
    ("/var/log/", ROOT + "/var/log/"),
    ("tls://hsm1:1792", "tls://127.0.0.1:%d" % PORT),
    ("target/debug/libferrohsm_pkcs11.so", MODULE),
]

editor = os.path.join(ROOT, "editor")
with open(editor, "w") as f:
    f.write("""#!/bin/sh
# The edits the README names: data_dir, socket, and the TLS listener for the network section.
sed -i -e 's|^#* *data_dir *=.*|data_dir = "%s"|' -e 's|^#* *socket *=.*|socket = "%s"|' \\
    -e 's|^#* *tls_listen *=.*|tls_listen = "127.0.0.1:%d"|' "$1"
grep -q '^tls_listen' "$1" || echo 'tls_listen = "127.0.0.1:%d"' >> "$1"
""" % (ROOT + "/srv/hsm1/data", ROOT + "/run/ferrohsm/ferrohsm.sock", PORT, PORT))
os.chmod(editor, 0o755)

env = dict(os.environ)
env.pop("FERROHSM_HOME", None)
env.pop("FERROHSM_SERVER", None)
env.pop("FERROHSM_PED_DIR", None)
env.update(PATH=BINDIR + os.pathsep + env.get("PATH", ""), EDITOR=editor, CO_CH=CHALLENGE)

for name in ["invoice.pdf", "a.txt"]:
    with open(os.path.join(WORK, name), "wb") as f:
        f.write(b"a document to sign: " + name.encode() + b"\n")


def blocks():
    """(kind, first line number, lines) of each fenced block."""
    out, cur = [], None
    for n, line in enumerate(open(README).read().splitlines(), 1):
        if cur is None and line.startswith("```"):
            cur = (line[3:].strip(), n, [])
        elif cur is not None and line.startswith("```"):
            out.append(cur)
            cur = None
        elif cur is not None:
            cur[2].append(line)
    return out


def rewrite(text):
    for a, b in REWRITES:
        text = text.replace(a, b)
    return text


def commands(lines):
    """Logical lines (continuations joined), without comment-only and empty lines."""
    out, acc = [], ""
    for line in lines:
        acc += line
        if line.endswith("\\"):
            acc = acc[:-1] + " "
            continue
        if acc.strip() and not acc.strip().startswith("#"):
            out.append(acc.strip())
        acc = ""
    return out


enrollment_code = None


def answer_for(prompt, last_secret):
    p = prompt.strip()
    if p.endswith("]:"):  # a question with a default
        for key, ans in [("reuse an existing", "no"), ("with a PED PIN?", "no"),
                         ("Overwrite?", "no"), ("PED: M", ""), ("PED: N", "")]:
            if key in p:
                return ans, False
        return None, False
    if "again, to confirm" in p:
        return last_secret, True
    if "PED PIN" in p:
        return PIN, True
    if "challenge secret" in p:
        return CHALLENGE, True
    if "enrollment code" in p and enrollment_code:
        return enrollment_code, True
    return None, False


def run_pty(cmd, where):
    """Runs one command line through bash in a pseudo-terminal, answering prompts."""
    global enrollment_code
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(WORK)
        os.execvpe("bash", ["bash", "-c", cmd], env)
    seen, last_secret, quiet_since, deadline = b"", None, time.time(), time.time() + 180
    answered_at = -1
    while True:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                d = os.read(fd, 4096)
            except OSError:
                d = b""
            if not d:
                break
            seen += d
            quiet_since = time.time()
            continue
        text = seen.decode(errors="replace")
        tail = text[text.rfind("\n") + 1:]
        if tail.rstrip().endswith(":") and time.time() - quiet_since > 0.3 and answered_at != len(seen):
            ans, secret = answer_for(tail, last_secret)
            if ans is None:
                os.kill(pid, signal.SIGKILL)
                sys.exit("%s: no answer for the prompt %r in:\n%s" % (where, tail, text))
            if secret:
                last_secret = ans
            os.write(fd, (ans + "\n").encode())
            answered_at = len(seen)
        if time.time() > deadline:
            os.kill(pid, signal.SIGKILL)
            sys.exit("%s: still running after 180 s:\n%s" % (where, text))
    _, status = os.waitpid(pid, 0)
    text = seen.decode(errors="replace")
    m = re.search(r"enrollment code for \S+: (\S+)", text)
    if m:
        enrollment_code = m.group(1)
    return os.waitstatus_to_exitcode(status), text


servers = []


def start_server(cmd, where):
    log = open(os.path.join(ROOT, "server.log"), "ab")
    p = subprocess.Popen(["bash", "-c", "exec " + cmd], cwd=WORK, env=env, stdout=log, stderr=log)
    servers.append(p)
    sock = ROOT + "/run/ferrohsm/ferrohsm.sock"
    for _ in range(300):
        if os.path.exists(sock) and p.poll() is None:
            return
        if p.poll() is not None:
            break
        time.sleep(0.1)
    sys.exit("%s: the server did not start:\n%s" % (where, open(os.path.join(ROOT, "server.log")).read()))


def main():
    print("readme: running %s in %s (paths under ROOT; TLS on 127.0.0.1:%d)" % (README, ROOT, PORT))
    ran = 0
    for kind, line, lines in blocks():
        if kind == "toml" and lines and lines[0].startswith("# /"):
            path = rewrite(lines[0][2:].split(",")[0].strip())
            with open(path, "w") as f:
                f.write(rewrite("\n".join(lines)) + "\n")
            print("readme: line %d: wrote %s" % (line, path))
            continue
        if kind != "sh":
            continue
        cmds = commands(lines)
        if any(c.startswith(("sudo ", "cargo ")) or " sudo " in c or "ferrohsm-bench" in c for c in cmds):
            print("readme: line %d: not run (installs or builds software): %s" % (line, cmds[0]))
            continue
        for c in cmds:
            where = "README line %d: %s" % (line, c)
            c = rewrite(c)
            if c.startswith("bash .ci/run"):
                continue
            # An assignment (`export NAME=VALUE`, `NAME=$(command)`), kept for later lines.
            m = re.match(r"^export\s+([A-Z_][A-Z0-9_]*)=(\S*)\s*(#.*)?$", c) or re.match(
                r"^([A-Z_][A-Z0-9_]*)=(\$\(.*\))\s*(#.*)?$", c)
            if m:
                out = subprocess.run(["bash", "-c", "%s=%s; printf %%s \"$%s\"" % (m.group(1), m.group(2), m.group(1))],
                                     cwd=WORK, env=env, capture_output=True, text=True)
                if out.returncode != 0 or not out.stdout:
                    sys.exit("%s: failed: %s" % (where, out.stderr))
                env[m.group(1)] = out.stdout
                ran += 1
                continue
            if re.match(r"^ferrohsm server --config \S+\s*(#.*)?$", c):
                start_server(c, where)
                ran += 1
                continue
            if "pkcs11-tool" in c and (shutil.which("pkcs11-tool") is None or not os.path.exists(MODULE)):
                print("readme: %s: not run: pkcs11-tool or the module is not here (the end-to-end suite installs and builds them)" % where)
                continue
            code, text = run_pty(c, where)
            if code != 0:
                sys.exit("%s: exit %d:\n%s" % (where, code, text))
            print("readme: ok  %s" % where)
            ran += 1
    for p in servers:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
    print("readme: %d commands ran as written" % ran)


try:
    main()
finally:
    for p in servers:
        if p.poll() is None:
            p.kill()
