package backup

// Tests of the parts that need no redis: manifest and entry-name rules,
// Unpack's refusals, the scratch config, and Fetch against objects the
// dump's own streaming wrote into a real local store.

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/backupstore"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

func TestParseManifest(t *testing.T) {
	tests := []struct {
		name, m string
		want    []string
		err     string
	}{
		{"base and incr", "file appendonly.aof.1.base.rdb seq 1 type b\nfile appendonly.aof.1.incr.aof seq 1 type i\n",
			[]string{"appendonly.aof.1.base.rdb", "appendonly.aof.1.incr.aof"}, ""},
		{"history left out", "file appendonly.aof.1.base.rdb seq 1 type h\nfile appendonly.aof.2.base.rdb seq 2 type b\nfile appendonly.aof.2.incr.aof seq 2 type i\nfile appendonly.aof.3.incr.aof seq 3 type i\n",
			[]string{"appendonly.aof.2.base.rdb", "appendonly.aof.2.incr.aof", "appendonly.aof.3.incr.aof"}, ""},
		{"quoted name", "file \"appendonly.aof.1.incr.aof\" seq 1 type i\n", []string{"appendonly.aof.1.incr.aof"}, ""},
		{"a path", "file ../../etc/passwd seq 1 type b\n", nil, "file name"},
		{"a dir", "file x/y seq 1 type b\n", nil, "file name"},
		{"dot-dot", "file .. seq 1 type b\n", nil, "file name"},
		{"unknown type", "file a seq 1 type z\n", nil, "type"},
		{"empty", "\n", nil, "names no file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseManifest([]byte(tc.m))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v; want %q", err, tc.err)
				}
				return
			}
			if err != nil || strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestEntryName(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"dump.rdb", "dump.rdb", true},
		{"appendonlydir/", "appendonlydir", true},
		{"appendonlydir/appendonly.aof.1.incr.aof", "appendonlydir/appendonly.aof.1.incr.aof", true},
		{"./dump.rdb", "dump.rdb", true},
		{"a/../dump.rdb", "dump.rdb", true},
		{"../dump.rdb", "", false},
		{"a/../../x", "", false},
		{"/etc/passwd", "", false},
		{"..", "", false},
		{".", "", false},
		{"", "", false},
		{`a\..\x`, "", false},
		{"a/b/c/d/e", "", false},
	} {
		got, err := entryName(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("entryName(%q) = %q, %v; want %q, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

type entry struct {
	name     string
	typ      byte
	body     string
	linkname string
}

func tarGz(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var b bytes.Buffer
	gz := gzip.NewWriter(&b)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o600, Size: int64(len(e.body)), Linkname: e.linkname}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestUnpack(t *testing.T) {
	good := tarGz(t, entry{"dump.rdb", tar.TypeReg, "REDIS0010...", ""}, entry{"appendonlydir/", tar.TypeDir, "", ""},
		entry{"appendonlydir/appendonly.aof.manifest", tar.TypeReg, "file x seq 1 type b\n", ""})
	tests := []struct {
		name string
		data []byte
		err  string
	}{
		{"a dump", good, ""},
		{"a file without its dir entry", tarGz(t, entry{"appendonlydir/x", tar.TypeReg, "x", ""}), ""},
		{"escape", tarGz(t, entry{"../evil", tar.TypeReg, "x", ""}), "outside"},
		{"absolute", tarGz(t, entry{"/tmp/evil", tar.TypeReg, "x", ""}), "not a relative path"},
		{"symlink", tarGz(t, entry{"dump.rdb", tar.TypeSymlink, "", "/etc/passwd"}), "only files and directories"},
		{"symlink then a file through it", tarGz(t, entry{"d", tar.TypeSymlink, "", "/tmp"}, entry{"d/x", tar.TypeReg, "x", ""}), "only files and directories"},
		{"hard link", tarGz(t, entry{"dump.rdb", tar.TypeLink, "", "/etc/passwd"}), "only files and directories"},
		{"device", tarGz(t, entry{"dev", tar.TypeChar, "", ""}), "only files and directories"},
		{"twice the same file", tarGz(t, entry{"dump.rdb", tar.TypeReg, "a", ""}, entry{"dump.rdb", tar.TypeReg, "b", ""}), "exists"},
		{"trailing garbage", append(append([]byte{}, good...), "garbage"...), "after the archive"},
		{"truncated", good[:len(good)-12], "unexpected EOF"},
		{"not gzip", []byte("plain text"), "gzip"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			err := Unpack(bytes.NewReader(tc.data), dir)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v; want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
		})
	}
	dir := t.TempDir()
	if err := Unpack(bytes.NewReader(good), dir); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "dump.rdb")); err != nil || string(b) != "REDIS0010..." {
		t.Fatalf("dump.rdb %q, %v", b, err)
	}
	if !HasAOF(dir) {
		t.Fatal("the manifest is not where HasAOF looks")
	}
}

func TestScratchConf(t *testing.T) {
	c := ScratchConf("127.0.0.1", 7000, "/data/x", true)
	for _, want := range []string{"bind 127.0.0.1\n", "port 7000\n", "dir /data/x\n", "appendonly yes\n", `save ""`, "replicaof 127.0.0.1 0\n", "databases 5\n", `appenddirname "appendonlydir"`} {
		if !strings.Contains(c, want) {
			t.Errorf("scratch conf lacks %q:\n%s", want, c)
		}
	}
	if strings.Contains(c, "requirepass") || strings.Contains(c, "user ") {
		t.Errorf("scratch conf has a password:\n%s", c)
	}
	if !strings.Contains(ScratchConf("127.0.0.1", 7000, "/d", false), "appendonly no\n") {
		t.Error("AOF on without an AOF")
	}
	s := &RuntimeScratch{Runtime: nil}
	if s.check() == nil {
		t.Error("a scratch without a runtime passed its check")
	}
}

func testKeyring(t *testing.T, ids ...string) backupstore.Keyring {
	t.Helper()
	k := backupstore.Keyring{Current: ids[0], Keys: map[string]string{}}
	for _, id := range ids {
		key, err := backupstore.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		k.Keys[id] = key
	}
	return k
}

// blockingReader yields n bytes of zeros, then blocks until ctx ends.
type blockingReader struct {
	ctx context.Context
	n   int
}

func (b *blockingReader) Read(p []byte) (int, error) {
	if b.n <= 0 {
		<-b.ctx.Done()
		return 0, b.ctx.Err()
	}
	n := min(len(p), b.n)
	clear(p[:n])
	b.n -= n
	return n, nil
}

func TestStoreAndFetch(t *testing.T) {
	ctx := context.Background()
	st, err := backupstore.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	k := testKeyring(t, "k1", "k2")
	const secret = "a-known-value-that-must-not-be-stored-in-clear"
	data := []byte(strings.Repeat(secret, 50000)) // 2.3 MB: many age chunks
	files := []archiveFile{{name: "dump.rdb", r: bytes.NewReader(data), size: int64(len(data)), mtime: time.Now()}}
	size, sum, keyID, err := store(ctx, st, "app/x.tar.gz.age", k, files, nil)
	if err != nil {
		t.Fatal(err)
	}
	obj := filepath.Join(st.Dir(), "app", "x.tar.gz.age")
	raw, err := os.ReadFile(obj)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(raw)
	if int64(len(raw)) != size || hex.EncodeToString(h[:]) != sum || keyID != "k1" {
		t.Fatalf("size %d (file %d), sum %s (file %x), key id %s", size, len(raw), sum, h, keyID)
	}
	if bytes.Contains(raw, []byte(secret[:16])) {
		t.Fatal("the stored object holds the value in clear")
	}

	var out bytes.Buffer
	n, err := Fetch(ctx, st, "app/x.tar.gz.age", k, keyID, sum, &out)
	if err != nil || n != int64(out.Len()) {
		t.Fatalf("fetch: %d, %v", n, err)
	}
	dir := t.TempDir()
	if err := Unpack(&out, dir); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "dump.rdb")); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("round trip: %d bytes, %v", len(b), err)
	}

	// A wrong checksum with an intact object.
	_, err = Fetch(ctx, st, "app/x.tar.gz.age", k, keyID, strings.Repeat("0", 64), io.Discard)
	if !errors.Is(err, backupstore.ErrCorrupt) || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Fatalf("wrong checksum: %v", err)
	}
	// No checksum at all.
	if _, err := Fetch(ctx, st, "app/x.tar.gz.age", k, keyID, "", io.Discard); err == nil {
		t.Fatal("fetched without a checksum")
	}
	// The other key of the keyring.
	if _, err := Fetch(ctx, st, "app/x.tar.gz.age", k, "k2", sum, io.Discard); !errors.Is(err, backupstore.ErrCorrupt) {
		t.Fatalf("wrong key: %v", err)
	}
	// A key id the keyring does not hold.
	if _, err := Fetch(ctx, st, "app/x.tar.gz.age", k, "gone", sum, io.Discard); !errors.Is(err, backupstore.ErrUnknownKey) {
		t.Fatalf("unknown key: %v", err)
	}
	// Missing object.
	if _, err := Fetch(ctx, st, "app/none", k, keyID, sum, io.Discard); !errors.Is(err, backupstore.ErrNotFound) {
		t.Fatalf("missing: %v", err)
	}
	// One flipped byte, at the start (age header), the middle and the end.
	for _, at := range []int{20, len(raw) / 2, len(raw) - 1} {
		bad := bytes.Clone(raw)
		bad[at] ^= 0x01
		if err := os.WriteFile(obj, bad, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Fetch(ctx, st, "app/x.tar.gz.age", k, keyID, sum, io.Discard)
		if !errors.Is(err, backupstore.ErrCorrupt) || !strings.Contains(err.Error(), "backup app/x.tar.gz.age is corrupt") {
			t.Fatalf("byte %d flipped: %v", at, err)
		}
		t.Logf("byte %d of %d flipped: %v", at, len(raw), err)
	}

	// A producer that fails, and a cancelled dump, leave nothing.
	short := []archiveFile{{name: "dump.rdb", r: bytes.NewReader(data), size: int64(len(data)) + 1}}
	if _, _, _, err := store(ctx, st, "app/y", k, short, nil); err == nil || !strings.Contains(err.Error(), "shrank") {
		t.Fatalf("short file: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		big := []archiveFile{{name: "dump.rdb", r: &blockingReader{ctx: cctx, n: 4 << 20}, size: 1 << 30}}
		_, _, _, err := store(cctx, st, "app/z", k, big, nil)
		errc <- err
	}()
	testutil.WaitFor(t, 10*time.Second, func() error { // part of it written
		l, err := st.Incomplete(ctx)
		if err != nil || len(l) == 0 {
			return fmt.Errorf("no temporary file yet (%v)", err)
		}
		return nil
	})
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled dump: %v", err)
	}
	objs, err := st.List(ctx, "app/")
	if err != nil || len(objs) != 1 || objs[0].Key != "app/x.tar.gz.age" {
		t.Fatalf("objects after failed dumps: %v, %v", objs, err)
	}
	if l, err := st.Incomplete(ctx); err != nil || len(l) != 0 {
		t.Fatalf("temporary files left: %v, %v", l, err)
	}
}

func TestExitReason(t *testing.T) {
	log := []string{
		"1:C 07 Dec 2026 06:27:22.536 # oO0OoO0OoO0Oo Redis is starting oO0OoO0OoO0Oo",
		"1:C 07 Dec 2026 06:27:22.536 # Redis version=7.0.15, bits=64, commit=00000000, modified=0, pid=1, just started",
		"1:C 07 Dec 2026 06:27:22.536 # Configuration loaded",
		"1:S 07 Dec 2026 06:27:22.537 # Server initialized",
		"1:S 07 Dec 2026 06:27:22.537 # WARNING Memory overcommit must be enabled!",
		"1:S 07 Dec 2026 06:27:22.537 * Loading RDB produced by version 7.0.15",
		"1:S 07 Dec 2026 06:27:22.537 # Short read or OOM loading DB. Unrecoverable error, aborting now.",
		"1:S 07 Dec 2026 06:27:22.537 # Internal error in RDB reading offset 0",
	}
	for _, tc := range []struct {
		lines  []string
		status int
		want   string
	}{
		{log, 1, "Short read or OOM loading DB. Unrecoverable error, aborting now."},
		{log[:6], 137, "killed (SIGKILL): most likely over its memory limit"},
		{nil, 1, "no reason in its log"},
	} {
		if got := ExitReason(tc.lines, tc.status); got != tc.want {
			t.Errorf("ExitReason = %q; want %q", got, tc.want)
		}
	}
}

// TestStoreMore: the files more returns follow in the archive; more's
// error fails the store and leaves nothing (a save that failed after its
// dump.rdb was streamed).
func TestStoreMore(t *testing.T) {
	ctx := context.Background()
	st, err := backupstore.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	k := testKeyring(t, "k1")
	file := func(name, content string) archiveFile {
		return archiveFile{name: name, r: strings.NewReader(content), size: int64(len(content)), mtime: time.Now()}
	}
	more := func(context.Context) ([]archiveFile, error) {
		return []archiveFile{{name: "appendonlydir/", mtime: time.Now()}, file("appendonlydir/a.aof", "aof")}, nil
	}
	_, sum, keyID, err := store(ctx, st, "m/ok", k, []archiveFile{file("dump.rdb", "rdb")}, more)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if _, err := Fetch(ctx, st, "m/ok", k, keyID, sum, &out); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := Unpack(&out, dir); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"dump.rdb": "rdb", "appendonlydir/a.aof": "aof"} {
		if b, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(b) != want {
			t.Fatalf("%s: %q, %v", name, b, err)
		}
	}

	failed := errors.New("background save on x failed")
	big := make([]byte, 3<<20) // incompressible, past the hand-off buffer: Put has written some
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	_, _, _, err = store(ctx, st, "m/failed", k, []archiveFile{{name: "dump.rdb", r: bytes.NewReader(big), size: int64(len(big))}},
		func(context.Context) ([]archiveFile, error) { return nil, failed })
	if !errors.Is(err, failed) {
		t.Fatalf("more failed: %v", err)
	}
	if objs, err := st.List(ctx, "m/"); err != nil || len(objs) != 1 || objs[0].Key != "m/ok" {
		t.Fatalf("objects: %v, %v", objs, err)
	}
	if l, err := st.Incomplete(ctx); err != nil || len(l) != 0 {
		t.Fatalf("temporary files left: %v, %v", l, err)
	}
}

// TestRDBWatch: the watcher takes the file renamed in place of the one
// the path named when it started, not that one; stop ends it and closes
// a file found but not taken.
func TestRDBWatch(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "dump.rdb")
	if err := os.WriteFile(p, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	w := newRDBWatch(p)
	w.start()
	select {
	case a := <-w.found:
		t.Fatalf("found %+v before any rename", a)
	case <-time.After(5 * rdbWatchPoll): // a few polls: none may find the old file
	}
	tmp := filepath.Join(dir, "temp-123.rdb")
	if err := os.WriteFile(tmp, []byte("new snapshot"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
	var a archiveFile
	select {
	case a = <-w.found:
	case <-time.After(10 * time.Second):
		t.Fatal("the renamed file was not found")
	}
	w.stop()
	b, err := io.ReadAll(a.r)
	_ = a.c.Close()
	if err != nil || string(b) != "new snapshot" || a.size != int64(len(b)) || a.name != "dump.rdb" {
		t.Fatalf("found %q (size %d, name %s), %v", b, a.size, a.name, err)
	}

	// No file at the start: the first one is new; found and not taken,
	// stop closes it.
	dir2 := t.TempDir()
	w = newRDBWatch(filepath.Join(dir2, "dump.rdb"))
	w.start()
	if err := os.WriteFile(filepath.Join(dir2, "dump.rdb"), []byte("first"), 0o600); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		if len(w.found) == 0 {
			return errors.New("not found yet")
		}
		return nil
	})
	w.stop()
	// Never started: stop returns at once.
	newRDBWatch(p).stop()
}
