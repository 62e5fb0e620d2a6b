package backupstore_test

import (
	"context"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/cacheplane/cacheplane/backupstore"
	"github.com/cacheplane/cacheplane/backupstore/storetest"
)

func newLocal(t *testing.T) *backupstore.Local {
	t.Helper()
	l, err := backupstore.NewLocal(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatalf("NewLocal: %v", err)
	}
	return l
}

func TestLocalConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) backupstore.Store {
		l := newLocal(t)
		// Whatever a subtest did, nothing may be written next to the store
		// (a bad key reaching out) and no temporary file may stay.
		t.Cleanup(func() {
			if t.Failed() {
				return
			}
			entries, err := os.ReadDir(filepath.Dir(l.Dir()))
			if err != nil || len(entries) != 1 {
				t.Errorf("beside the store: %v, %v; want only the store", entries, err)
			}
			checkModes(t, l.Dir())
		})
		return l
	})
}

// checkModes walks a store: directories 0700, files 0600, no temporary
// file.
func checkModes(t *testing.T, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		want := fs.FileMode(0o600)
		if d.IsDir() {
			want = fs.ModeDir | 0o700
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %s, want %s", p, fi.Mode(), want)
		}
		if strings.HasPrefix(d.Name(), ".") {
			t.Errorf("%s: a temporary file stayed", p)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
}

func TestNewLocalCreatesPrivateDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	l, err := backupstore.NewLocal(dir)
	if err != nil {
		t.Fatalf("NewLocal: %v", err)
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode() != fs.ModeDir|0o700 {
		t.Fatalf("store dir: %v, %v; want a 0700 directory", fi, err)
	}
	if got, want := l.String(), "local "+dir; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := backupstore.NewLocal(file); err == nil {
		t.Fatal("NewLocal on a file: no error")
	}
	if _, err := backupstore.NewLocal(""); err == nil {
		t.Fatal("NewLocal with no directory: no error")
	}
}

// A Put's temporary file is in the object's directory (so the rename is
// atomic) and invisible to List while the Put runs.
func TestLocalPutTempFileBesideObject(t *testing.T) {
	l := newLocal(t)
	ctx := t.Context()
	var seen []string
	r := readerFunc(func(p []byte) (int, error) {
		if seen == nil {
			left, err := l.Incomplete(ctx)
			if err != nil {
				return 0, err
			}
			seen = left
			return copy(p, "x"), nil
		}
		return 0, io.EOF
	})
	if _, err := l.Put(ctx, "app/obj.age", r); err != nil {
		t.Fatalf("Put: %v", err)
	}
	if len(seen) != 1 || !strings.HasPrefix(seen[0], "app/.put-") {
		t.Fatalf("during Put, Incomplete = %q; want one app/.put-* file", seen)
	}
	if left, err := l.Incomplete(ctx); err != nil || len(left) != 0 {
		t.Fatalf("after Put, Incomplete = %q, %v", left, err)
	}
}

// A temporary file left by a killed process stays invisible.
func TestLocalListSkipsLeftovers(t *testing.T) {
	l := newLocal(t)
	ctx := t.Context()
	if _, err := l.Put(ctx, "app/obj.age", strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(l.Dir(), "app", ".put-12345"), []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	objs, err := l.List(ctx, "")
	if err != nil || len(objs) != 1 || objs[0].Key != "app/obj.age" {
		t.Fatalf("List = %+v, %v; want app/obj.age only", objs, err)
	}
	left, err := l.Incomplete(ctx)
	if err != nil || len(left) != 1 || left[0] != "app/.put-12345" {
		t.Fatalf("Incomplete = %q, %v", left, err)
	}
}

// Memory does not grow with the object: a 64 MiB Put and Get allocate a
// small, fixed amount.
func TestLocalMemoryFlat(t *testing.T) {
	l := newLocal(t)
	ctx := context.Background()
	const size = 64 << 20
	src := io.LimitReader(rand.NewChaCha8([32]byte{7}), size)
	alloc := allocated(func() {
		if n, err := l.Put(ctx, "big/obj", src); err != nil || n != size {
			t.Fatalf("Put = %d, %v", n, err)
		}
		rc, err := l.Get(ctx, "big/obj")
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		defer rc.Close()
		if n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{rc}, make([]byte, 64<<10)); err != nil || n != size {
			t.Fatalf("read = %d, %v", n, err)
		}
	})
	if alloc > 4<<20 {
		t.Fatalf("Put and Get of %d MiB allocated %d KiB; want a fixed few buffers", size>>20, alloc>>10)
	}
	t.Logf("Put + Get of %d MiB allocated %d KiB", size>>20, alloc>>10)
}

func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }
