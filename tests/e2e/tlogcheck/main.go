// An audit export checked by code nobody at ferrohsm wrote: Go's golang.org/x/mod/sumdb/note
// opens the checkpoint with the HSM's verifier key (ignoring cosignatures it cannot read), and
// golang.org/x/mod/sumdb/tlog checks every record's inclusion proof and every earlier
// checkpoint's consistency proof against it. Prints "OK size=N records=M earlier=K" and exits
// 0 only if all hold.
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go run tests/e2e/tlogcheck/main.go EXPORT VKEY
package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type export struct {
	Origin     string `json:"origin"`
	Checkpoint string `json:"checkpoint"`
	Records    []struct {
		Record string   `json:"record"`
		Proof  []string `json:"proof"`
	} `json:"records"`
	Earlier []struct {
		Checkpoint  string   `json:"checkpoint"`
		Consistency []string `json:"consistency"`
	} `json:"earlier"`
}

func fail(f string, a ...interface{}) {
	fmt.Printf("FAILED: "+f+"\n", a...)
	os.Exit(1)
}

func hash(s string) tlog.Hash {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != tlog.HashSize {
		fail("a hash is not base64 of 32 bytes: %q", s)
	}
	var h tlog.Hash
	copy(h[:], b)
	return h
}

func hashes(v []string) []tlog.Hash {
	out := make([]tlog.Hash, len(v))
	for i, s := range v {
		out[i] = hash(s)
	}
	return out
}

// open verifies a checkpoint note with the HSM's key and reads its origin, size and root.
func open(text string, v note.Verifier) (string, int64, tlog.Hash) {
	n, err := note.Open([]byte(text), note.VerifierList(v))
	if err != nil {
		fail("checkpoint: %v", err)
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 {
		fail("checkpoint body is not origin, size, root")
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		fail("checkpoint size: %v", err)
	}
	return lines[0], size, hash(lines[2])
}

func main() {
	if len(os.Args) != 3 {
		fail("usage: tlogcheck EXPORT VKEY")
	}
	raw, err := os.ReadFile(os.Args[1])
	if err != nil {
		fail("%v", err)
	}
	var ex export
	if err := json.Unmarshal(raw, &ex); err != nil {
		fail("export: %v", err)
	}
	vkey, err := os.ReadFile(os.Args[2])
	if err != nil {
		fail("%v", err)
	}
	v, err := note.NewVerifier(strings.TrimSpace(string(vkey)))
	if err != nil {
		fail("HSM key: %v", err)
	}
	origin, size, root := open(ex.Checkpoint, v)
	if origin != ex.Origin || v.Name() != origin {
		fail("origin %q, export origin %q, key name %q", origin, ex.Origin, v.Name())
	}
	for _, r := range ex.Records {
		var rec struct {
			Seq int64 `json:"seq"`
		}
		if err := json.Unmarshal([]byte(r.Record), &rec); err != nil {
			fail("record: %v", err)
		}
		leaf := tlog.RecordHash([]byte(r.Record))
		if err := tlog.CheckRecord(hashes(r.Proof), size, root, rec.Seq-1, leaf); err != nil {
			fail("record #%d: %v", rec.Seq, err)
		}
	}
	for _, e := range ex.Earlier {
		_, old, oldRoot := open(e.Checkpoint, v)
		if err := tlog.CheckTree(hashes(e.Consistency), size, root, old, oldRoot); err != nil {
			fail("earlier checkpoint of size %d: %v", old, err)
		}
	}
	fmt.Printf("OK size=%d records=%d earlier=%d\n", size, len(ex.Records), len(ex.Earlier))
}
