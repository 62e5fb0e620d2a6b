package backupstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// errNotDir: a path goes through a file ("a/b" when "a" is an object).
var errNotDir error = syscall.ENOTDIR

// tempPrefix starts the name of a Put's temporary file. ValidKey refuses
// segments starting with a dot, so no key can name one, and List skips them.
const tempPrefix = ".put-"

// copyBufSize is Local.Put's one fixed buffer.
const copyBufSize = 1 << 20

// Local is a Store in a local directory: one file per object (0600) under
// directories (0700) named by the key's segments. Put writes a temporary
// file in the object's directory, fsyncs it, renames it over the key and
// fsyncs the directory: a reader sees the old object or the new one, never
// a part, and a crash leaves at most a temporary file (see Incomplete).
// Directories emptied by Delete stay (a concurrent Put may be about to
// write in them).
type Local struct {
	dir string
}

// NewLocal opens a local store in dir, creating it (0700) if missing.
func NewLocal(dir string) (*Local, error) {
	if dir == "" {
		return nil, errors.New("backupstore: local store: empty directory")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("backupstore: local store %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("backupstore: local store: %w", err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("backupstore: local store: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("backupstore: local store %s: not a directory", abs)
	}
	return &Local{dir: abs}, nil
}

// Dir returns the store's absolute directory.
func (l *Local) Dir() string { return l.dir }

func (l *Local) String() string { return "local " + l.dir }

func (l *Local) path(key string) string {
	return filepath.Join(l.dir, filepath.FromSlash(key))
}

// Put implements Store.
func (l *Local) Put(ctx context.Context, key string, r io.Reader) (n int64, err error) {
	if err := ValidKey(key); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("backupstore: put %s: %w", key, err)
	}
	final := l.path(key)
	dir := filepath.Dir(final)
	if err := l.mkdirs(dir); err != nil {
		return 0, fmt.Errorf("backupstore: put %s: %w", key, err)
	}
	f, err := os.CreateTemp(dir, tempPrefix+"*")
	if err != nil {
		return 0, fmt.Errorf("backupstore: put %s: %w", key, err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	// A struct hiding ReadFrom/WriteTo keeps io.CopyBuffer on our one
	// buffer, and the ctx is checked between reads.
	buf := make([]byte, copyBufSize)
	n, err = io.CopyBuffer(struct{ io.Writer }{f}, ctxReader{ctx, r}, buf)
	if err != nil {
		return 0, fmt.Errorf("backupstore: put %s: after %d bytes: %w", key, n, err)
	}
	if err = f.Sync(); err != nil {
		return 0, fmt.Errorf("backupstore: put %s: fsync: %w", key, err)
	}
	if err = f.Close(); err != nil {
		return 0, fmt.Errorf("backupstore: put %s: %w", key, err)
	}
	// Last chance to give up with nothing visible.
	if err = ctx.Err(); err != nil {
		return 0, fmt.Errorf("backupstore: put %s: %w", key, err)
	}
	if err = os.Rename(f.Name(), final); err != nil {
		return 0, fmt.Errorf("backupstore: put %s: %w", key, err)
	}
	if err := syncDir(dir); err != nil {
		// The object is in place; only its durability across a crash is
		// in doubt. Say so rather than pretend it was not written.
		return n, fmt.Errorf("backupstore: put %s: written, but fsync of its directory failed: %w", key, err)
	}
	return n, nil
}

// mkdirs creates dir and its missing parents under the store's directory
// (0700), fsyncing each parent it added an entry to.
func (l *Local) mkdirs(dir string) error {
	rel, err := filepath.Rel(l.dir, dir)
	if err != nil || rel == "." {
		return err
	}
	cur := l.dir
	for seg := range strings.SplitSeq(rel, string(filepath.Separator)) {
		parent := cur
		cur = filepath.Join(cur, seg)
		err := os.Mkdir(cur, 0o700)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return err
		}
		if err := syncDir(parent); err != nil {
			return err
		}
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// ctxReader fails with ctx's error once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Get implements Store.
func (l *Local) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := ValidKey(key); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("backupstore: get %s: %w", key, err)
	}
	f, err := os.Open(l.path(key))
	if err != nil {
		return nil, fmt.Errorf("backupstore: get %s: %w", key, notFound(err))
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = ErrNotFound
	}
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("backupstore: get %s: %w", key, err)
	}
	return f, nil
}

// notFound maps "no such file" (and "a file where a directory was
// expected") to ErrNotFound.
func notFound(err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, errNotDir) {
		return ErrNotFound
	}
	return err
}

// Stat implements Store.
func (l *Local) Stat(ctx context.Context, key string) (Object, error) {
	if err := ValidKey(key); err != nil {
		return Object{}, err
	}
	if err := ctx.Err(); err != nil {
		return Object{}, fmt.Errorf("backupstore: stat %s: %w", key, err)
	}
	fi, err := os.Stat(l.path(key))
	if err == nil && !fi.Mode().IsRegular() {
		err = ErrNotFound
	}
	if err != nil {
		return Object{}, fmt.Errorf("backupstore: stat %s: %w", key, notFound(err))
	}
	return Object{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// List implements Store. Temporary files of Puts under way are not listed.
func (l *Local) List(ctx context.Context, prefix string) ([]Object, error) {
	// Walk only the deepest directory the prefix names in full; a prefix
	// whose directory part is no valid key cannot match any key.
	root := l.dir
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		if ValidKey(prefix[:i]) != nil {
			return []Object{}, nil
		}
		root = l.path(prefix[:i])
	}
	objs := []Object{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == root && errors.Is(notFound(err), ErrNotFound) {
				return fs.SkipAll
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == root {
			return nil
		}
		if strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		rel, err := filepath.Rel(l.dir, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if d.IsDir() {
			// Skip directories that cannot hold a key with the prefix.
			if !strings.HasPrefix(key+"/", prefix) && !strings.HasPrefix(prefix, key+"/") {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || !strings.HasPrefix(key, prefix) || ValidKey(key) != nil {
			return nil
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil // deleted since the directory was read
		}
		if err != nil {
			return err
		}
		objs = append(objs, Object{Key: key, Size: fi.Size(), ModTime: fi.ModTime()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("backupstore: list %q: %w", prefix, err)
	}
	// WalkDir's order is per directory ("a/x" before "a-b"); keys sort as
	// strings.
	slices.SortFunc(objs, func(a, b Object) int { return strings.Compare(a.Key, b.Key) })
	return objs, nil
}

// Delete implements Store.
func (l *Local) Delete(ctx context.Context, key string) error {
	if err := ValidKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("backupstore: delete %s: %w", key, err)
	}
	p := l.path(key)
	fi, err := os.Lstat(p)
	if err == nil && fi.IsDir() {
		return nil // a directory is no object: nothing to delete
	}
	if err == nil {
		err = os.Remove(p)
	}
	if err != nil {
		if errors.Is(notFound(err), ErrNotFound) {
			return nil
		}
		return fmt.Errorf("backupstore: delete %s: %w", key, err)
	}
	if err := syncDir(filepath.Dir(p)); err != nil {
		return fmt.Errorf("backupstore: delete %s: fsync of its directory: %w", key, err)
	}
	return nil
}

// Incomplete lists the temporary files of Puts that never finished (the
// process died mid-Put; a Put that returns removes its own), as paths
// relative to the store's directory. They are invisible to Get, Stat and
// List; an operator may remove those older than any running backup.
func (l *Local) Incomplete(ctx context.Context) ([]string, error) {
	var out []string
	err := filepath.WalkDir(l.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if !d.IsDir() && strings.HasPrefix(d.Name(), tempPrefix) {
			rel, err := filepath.Rel(l.dir, p)
			if err != nil {
				return err
			}
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("backupstore: incomplete puts in %s: %w", l.dir, err)
	}
	return out, nil
}
