package backup

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"

	"github.com/klauspost/compress/gzip"

	"github.com/cacheplane/cacheplane/backupstore"
)

// Unpack bounds.
const (
	// MaxUnpackBytes bounds the bytes one archive may unpack to (the
	// free space of the target's file system bounds it further).
	MaxUnpackBytes int64 = 1 << 40
	// maxEntries bounds an archive's entries (a dump has a handful).
	maxEntries = 10000
	// maxDepth bounds an entry's path depth (a dump has appendonlydir/x).
	maxDepth = 4
)

// writeErr records the error of the writer it wraps, so a failed copy
// tells the destination's failure from the source's.
type writeErr struct {
	w   io.Writer
	err error
}

func (w *writeErr) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	if err != nil && w.err == nil {
		w.err = err
	}
	return n, err
}

// corruptError is a corruption Fetch found itself (errors.Is
// backupstore.ErrCorrupt).
type corruptError string

func (e corruptError) Error() string        { return string(e) }
func (e corruptError) Is(target error) bool { return target == backupstore.ErrCorrupt }

func corrupt(key string, err error) error {
	return fmt.Errorf("backup %s is corrupt: %w", key, err)
}

// Fetch streams the object key of st to dst as the plaintext tar.gz: the
// stored bytes are hashed (SHA-256) as they are read and unsealed with
// keyID of k. It returns the plaintext bytes written.
//
// The checksum is known to match only at the end: dst has received data
// before Fetch can tell the object is intact, so the caller must not use
// dst's content unless Fetch returned nil (write to a temporary file and
// rename it, or unpack into a directory removed on error, as Drill does).
// A checksum mismatch, or an object age does not authenticate, is an
// error wrapping backupstore.ErrCorrupt ("backup KEY is corrupt: ...").
func Fetch(ctx context.Context, st backupstore.Store, key string, k backupstore.Keyring, keyID, checksum string, dst io.Writer) (int64, error) {
	if checksum == "" {
		return 0, fmt.Errorf("fetch %s: no checksum recorded: refusing an object that cannot be verified", key)
	}
	rc, err := st.Get(ctx, key)
	if err != nil {
		return 0, fmt.Errorf("fetch %s from %s: %w", key, st, err)
	}
	defer rc.Close()
	h := sha256.New()
	stored := io.TeeReader(ctxReader{ctx, rc}, h)
	plain, err := backupstore.Unseal(stored, k, keyID)
	if errors.Is(err, backupstore.ErrCorrupt) {
		return 0, corrupt(key, err)
	}
	if err != nil {
		return 0, fmt.Errorf("fetch %s: %w", key, err)
	}
	out := &writeErr{w: dst}
	buf := make([]byte, copyBufSize)
	n, err := io.CopyBuffer(struct{ io.Writer }{out}, struct{ io.Reader }{plain}, buf)
	switch {
	case out.err != nil:
		return n, fmt.Errorf("fetch %s: write: %w", key, out.err)
	case errors.Is(err, backupstore.ErrCorrupt):
		return n, corrupt(key, err)
	case err != nil:
		return n, fmt.Errorf("fetch %s from %s: %w", key, st, err)
	}
	// age stops at its last chunk: whatever follows counts in the
	// checksum too.
	if _, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{stored}, buf); err != nil {
		return n, fmt.Errorf("fetch %s from %s: %w", key, st, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != checksum {
		return n, corruptError(fmt.Sprintf("backup %s is corrupt: checksum mismatch (the stored object's SHA-256 is %s, the record says %s)", key, got, checksum))
	}
	return n, nil
}

// Unpack extracts the tar.gz read from r into dir (which must exist),
// reading r to its end (the gzip trailer is checked). Only regular files
// and directories are accepted, each below dir (no absolute path, no "..",
// no symlink followed out: the files are created through an os.Root),
// none existing already, at most MaxUnpackBytes in all and no more than
// dir's file system has free. On error, what was extracted stays: the
// caller removes dir.
func Unpack(r io.Reader, dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	defer root.Close()
	limit := MaxUnpackBytes
	var sfs syscall.Statfs_t
	if err := syscall.Statfs(dir, &sfs); err == nil {
		limit = min(limit, int64(sfs.Bavail)*int64(sfs.Bsize))
	}
	gz, err := gzip.NewReader(r)
	if err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	tr := tar.NewReader(gz)
	buf := make([]byte, copyBufSize)
	var total int64
	for entries := 0; ; entries++ {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("unpack: %w", err)
		}
		if entries == maxEntries {
			return fmt.Errorf("unpack: more than %d entries", maxEntries)
		}
		name, err := entryName(hdr.Name)
		if err != nil {
			return fmt.Errorf("unpack: %w", err)
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, 0o700); err != nil {
				return fmt.Errorf("unpack %s: %w", name, err)
			}
		case tar.TypeReg:
			if hdr.Size < 0 || hdr.Size > limit-total {
				return fmt.Errorf("unpack %s: %d bytes: over the bound of %d bytes (or the free space of %s)", name, hdr.Size, limit, dir)
			}
			if d := path.Dir(name); d != "." {
				if err := root.MkdirAll(d, 0o700); err != nil {
					return fmt.Errorf("unpack %s: %w", name, err)
				}
			}
			f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return fmt.Errorf("unpack %s: %w", name, err)
			}
			n, err := io.CopyBuffer(struct{ io.Writer }{f}, struct{ io.Reader }{tr}, buf)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("unpack %s: %w", name, err)
			}
			total += n
		default:
			return fmt.Errorf("unpack %s: entry type %q: only files and directories", name, hdr.Typeflag)
		}
	}
	// The gzip stream's end: its checksum, and nothing after it.
	if _, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{gz}, buf); err != nil {
		return fmt.Errorf("unpack: after the archive: %w", err)
	}
	return nil
}

// entryName checks an archive entry's name and returns it cleaned,
// relative, slash-separated (pure).
func entryName(n string) (string, error) {
	if n == "" || strings.ContainsAny(n, "\\\x00") || strings.HasPrefix(n, "/") {
		return "", fmt.Errorf("entry name %q: not a relative path", n)
	}
	c := path.Clean(n)
	if c == "." || c == ".." || strings.HasPrefix(c, "../") || !fs.ValidPath(c) {
		return "", fmt.Errorf("entry name %q: outside the directory", n)
	}
	if strings.Count(c, "/") >= maxDepth {
		return "", fmt.Errorf("entry name %q: deeper than %d", n, maxDepth)
	}
	return c, nil
}
