package packaging

import (
	"archive/tar"
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Epoch is the modification time of every file in every image, so that a
// rebuild from the same binaries gives the same digests.
var Epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// entry is one file, directory or symlink of an image's root filesystem.
type entry struct {
	name     string // absolute path inside the image, cleaned
	typeflag byte
	mode     int64
	linkname string // symlinks
	src      string // host file to copy (regular files with content from disk)
	data     []byte // regular files with literal content
}

// rootfs collects the entries of one image layer, keyed by path.
type rootfs struct {
	entries map[string]*entry
}

func newRootfs() *rootfs { return &rootfs{entries: map[string]*entry{}} }

func (r *rootfs) dir(p string, mode int64) {
	p = path.Clean(p)
	if p == "/" {
		return
	}
	r.dir(path.Dir(p), 0o755)
	if _, ok := r.entries[p]; !ok {
		r.entries[p] = &entry{name: p, typeflag: tar.TypeDir, mode: mode}
	}
}

func (r *rootfs) literal(p string, mode int64, data []byte) {
	p = path.Clean(p)
	r.dir(path.Dir(p), 0o755)
	r.entries[p] = &entry{name: p, typeflag: tar.TypeReg, mode: mode, data: data}
}

// addFrom adds the file at image path p of the tree at root ("" = the
// host; else unpacked packages, read at root+p), following every symlink
// on the way (in the directory part too, e.g. /lib64 -> usr/lib64; inside
// root, absolute ones too) and recording each symlink as it is, so names a
// binary switches on (redis-sentinel -> redis-check-rdb) survive.
func (r *rootfs) addFrom(root, p string) error {
	return r.walkTo(root, p, 0, true, nil)
}

// resolveIn returns the host path of the regular file or directory that
// image path p names inside root, following symlinks inside root.
func resolveIn(root, p string) (string, error) {
	var out string
	err := (&rootfs{entries: map[string]*entry{}}).walkTo(root, p, 0, false, &out)
	return out, err
}

// walkTo walks image path p inside root component by component; record
// adds what it passes to r, final receives the host path reached.
func (r *rootfs) walkTo(root, p string, depth int, record bool, final *string) error {
	if depth > 40 {
		return fmt.Errorf("add %s: too many levels of symbolic links", p)
	}
	if !filepath.IsAbs(p) {
		return fmt.Errorf("add %s: path must be absolute", p)
	}
	parts := strings.Split(strings.TrimPrefix(path.Clean(p), "/"), "/")
	cur := "/"
	for i, part := range parts {
		next := path.Join(cur, part)
		fi, err := os.Lstat(root + next)
		if err != nil {
			return fmt.Errorf("add %s: %w", p, err)
		}
		last := i == len(parts)-1
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(root + next)
			if err != nil {
				return fmt.Errorf("add %s: %w", p, err)
			}
			if record {
				r.dir(cur, 0o755)
				r.entries[next] = &entry{name: next, typeflag: tar.TypeSymlink, mode: 0o777, linkname: target}
			}
			resolved := target
			if !path.IsAbs(resolved) {
				resolved = path.Join(cur, target)
			}
			rest := path.Join(append([]string{resolved}, parts[i+1:]...)...)
			return r.walkTo(root, rest, depth+1, record, final)
		case fi.IsDir():
			if last {
				if final != nil {
					*final = root + next
					return nil
				}
				return fmt.Errorf("add %s: is a directory", p)
			}
			if record {
				r.dir(next, int64(fi.Mode().Perm()))
			}
			cur = next
		case fi.Mode().IsRegular():
			if !last {
				return fmt.Errorf("add %s: %s is not a directory", p, next)
			}
			if final != nil {
				*final = root + next
			}
			if record {
				r.dir(cur, 0o755)
				r.entries[next] = &entry{name: next, typeflag: tar.TypeReg, mode: int64(fi.Mode().Perm()), src: root + next}
			}
		default:
			return fmt.Errorf("add %s: %s is not a regular file, directory or symlink", p, next)
		}
	}
	if final != nil && len(parts) == 1 && parts[0] == "" {
		*final = root + "/"
	}
	return nil
}

// writeTar writes the entries sorted by path (parents before children),
// owned by 0:0 with mtime Epoch.
func (r *rootfs) writeTar(w io.Writer) error {
	names := make([]string, 0, len(r.entries))
	for n := range r.entries {
		names = append(names, n)
	}
	sort.Strings(names)
	tw := tar.NewWriter(w)
	for _, n := range names {
		e := r.entries[n]
		hdr := &tar.Header{
			Typeflag: e.typeflag,
			Name:     strings.TrimPrefix(e.name, "/"),
			Linkname: e.linkname,
			Mode:     e.mode,
			ModTime:  Epoch,
			Format:   tar.FormatPAX,
		}
		if e.typeflag == tar.TypeDir {
			hdr.Name += "/"
		}
		if e.typeflag == tar.TypeReg && e.src == "" {
			hdr.Size = int64(len(e.data))
		}
		if err := writeEntry(tw, hdr, e); err != nil {
			return fmt.Errorf("tar %s: %w", n, err)
		}
	}
	return tw.Close()
}

func writeEntry(tw *tar.Writer, hdr *tar.Header, e *entry) error {
	if e.typeflag != tar.TypeReg || e.src == "" {
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err := tw.Write(e.data)
		return err
	}
	f, err := os.Open(e.src)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	hdr.Size = fi.Size()
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if n, err := io.Copy(tw, f); err != nil {
		return err
	} else if n != hdr.Size {
		return errors.New("size changed while reading")
	}
	return nil
}

// sharedLibs returns the absolute paths of the libraries (and the loader)
// `ldd` lists for the binary; none for a static binary.
func sharedLibs(binary string) ([]string, error) {
	out, err := exec.Command("ldd", binary).CombinedOutput()
	if err != nil {
		if bytes.Contains(out, []byte("not a dynamic executable")) {
			return nil, nil
		}
		return nil, fmt.Errorf("ldd %s: %w: %s", binary, err, bytes.TrimSpace(out))
	}
	return parseLdd(out)
}

// parseLdd reads ldd's output: "name => /path (addr)", "/path (addr)" (the
// loader), "name (addr)" (the vDSO, skipped) and "name => not found".
func parseLdd(out []byte) ([]string, error) {
	var libs []string
	var missing []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.Contains(line, "statically linked") {
			continue
		}
		if name, rest, ok := strings.Cut(line, "=>"); ok {
			rest = strings.TrimSpace(rest)
			if strings.HasPrefix(rest, "not found") {
				missing = append(missing, strings.TrimSpace(name))
				continue
			}
			p, _, _ := strings.Cut(rest, " ")
			if path.IsAbs(p) {
				libs = append(libs, p)
			}
			continue
		}
		p, _, _ := strings.Cut(line, " ")
		if path.IsAbs(p) {
			libs = append(libs, p)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("libraries not found: %s", strings.Join(missing, ", "))
	}
	return libs, sc.Err()
}
