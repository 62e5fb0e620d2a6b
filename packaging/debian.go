package packaging

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// DebianSource says where an image's files come from when the host does
// not install them: Debian packages of another suite (bookworm-backports,
// trixie), downloaded — never installed — through a private apt
// configuration, and unpacked with dpkg-deb.
type DebianSource struct {
	// Suite of the host's Debian mirror, e.g. "trixie".
	Suite string `json:"suite"`
	// Packages to download and unpack, e.g. valkey-server, valkey-tools.
	Packages []string `json:"packages"`
	// Version is the upstream version Packages must package ("8.1.1");
	// the build fails when the suite carries another.
	Version string `json:"version"`
	// OwnLibraries: also download the libraries the packages depend on
	// (lib* dependencies, recursively) from the suite, and resolve the
	// binaries' libraries inside the unpacked tree with its own loader —
	// for a suite built against a newer glibc than the host's. Without
	// it, the host's libraries are used (bookworm-backports).
	OwnLibraries bool `json:"own_libraries,omitempty"`
}

// debianCache is the directory (Options.DebianDir) that keeps everything
// building images from Debian packages needs, so a rebuild is offline:
//
//	apt/<suite>/        private apt configuration: apt.conf, sources.list,
//	                    an empty dpkg status, lists/, cache/
//	debs/               the downloaded .deb files, shared by every image
//	locks/<image>.json  what was resolved for the image's source (package
//	                    versions and SHA-256); reused while the source is
//	                    unchanged and the files are there
//	roots/<image>/      the image's packages unpacked
//
// The host's apt configuration (/etc/apt) is only read, for its mirror.
type debianCache struct {
	dir    string
	etcApt string
	logf   func(format string, args ...any)
	// updated records suites whose lists were refreshed in this run.
	updated map[string]bool
}

// lockFile is what was resolved for one image.
type lockFile struct {
	Spec     string    `json:"spec"` // hash of the DebianSource
	Packages []lockPkg `json:"packages"`
}

type lockPkg struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	File    string `json:"file"`
	SHA256  string `json:"sha256"`
}

// resolverVersion is part of every lock's spec: bump it when Resolve's
// rules change, so cached resolutions are made again.
const resolverVersion = 2

func specHash(src DebianSource) string {
	b, _ := json.Marshal(struct {
		Src      DebianSource
		Resolver int
	}{src, resolverVersion}) // plain strings
	return hex.EncodeToString(sha256Sum(b))
}

func sha256Sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

// lock holds an exclusive flock on the cache directory for the whole
// preparation, so two builds (make images in two shells) never unpack
// into one tree at once.
func (c *debianCache) lock() (unlock func(), err error) {
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return nil, fmt.Errorf("debian cache: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(c.dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("debian cache: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("debian cache: lock: %w", err)
	}
	return func() { f.Close() }, nil
}

// prepare returns the directory holding img's packages unpacked,
// downloading what the cache lacks.
func (c *debianCache) prepare(ctx context.Context, img Image) (string, error) {
	src := *img.Debian
	lf, ok := c.cachedLock(img.Name, src)
	if !ok {
		var err error
		if lf, err = c.resolveAndDownload(ctx, src); err != nil {
			return "", fmt.Errorf("image %s: %s packages: %w", img.Ref, src.Suite, err)
		}
		js, err := json.MarshalIndent(lf, "", "  ")
		if err != nil {
			return "", err
		}
		if err := os.MkdirAll(filepath.Join(c.dir, "locks"), 0o755); err != nil {
			return "", err
		}
		if err := writeFileAtomic(filepath.Join(c.dir, "locks", img.Name+".json"), append(js, '\n')); err != nil {
			return "", fmt.Errorf("image %s: %w", img.Ref, err)
		}
	}
	root, err := c.unpack(ctx, img.Name, src, lf)
	if err != nil {
		return "", fmt.Errorf("image %s: %w", img.Ref, err)
	}
	return root, nil
}

// cachedLock returns the image's lock when it matches src and every file
// it names is in debs/ with its checksum.
func (c *debianCache) cachedLock(name string, src DebianSource) (lockFile, bool) {
	var lf lockFile
	b, err := os.ReadFile(filepath.Join(c.dir, "locks", name+".json"))
	if err != nil || json.Unmarshal(b, &lf) != nil || lf.Spec != specHash(src) || len(lf.Packages) == 0 {
		return lockFile{}, false
	}
	for _, p := range lf.Packages {
		if err := checkSHA256(filepath.Join(c.dir, "debs", p.File), p.SHA256); err != nil {
			c.logf("debian cache: %v: resolving again", err)
			return lockFile{}, false
		}
	}
	return lf, true
}

func checkSHA256(name, want string) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); want == "" || got != want {
		return fmt.Errorf("%s: sha256 %s, want %s", filepath.Base(name), got, want)
	}
	return nil
}

// resolveAndDownload resolves src against the suite's lists and downloads
// the missing files. Lists are fetched when missing; when resolving or
// downloading fails on lists that were not fetched in this run (the mirror
// moved on), they are fetched again and it is tried once more.
func (c *debianCache) resolveAndDownload(ctx context.Context, src DebianSource) (lockFile, error) {
	if err := c.workspace(src.Suite); err != nil {
		return lockFile{}, err
	}
	if !c.hasLists(src.Suite) {
		if err := c.update(ctx, src.Suite); err != nil {
			return lockFile{}, err
		}
	}
	lf, err := c.tryResolve(ctx, src)
	if err != nil && !c.updated[src.Suite] {
		c.logf("debian cache: %v; refreshing the %s lists", err, src.Suite)
		if uerr := c.update(ctx, src.Suite); uerr != nil {
			return lockFile{}, errors.Join(err, uerr)
		}
		lf, err = c.tryResolve(ctx, src)
	}
	return lf, err
}

func (c *debianCache) tryResolve(ctx context.Context, src DebianSource) (lockFile, error) {
	stanzas, err := Resolve(src, func(names []string) ([]Stanza, error) {
		out, err := c.run(ctx, src.Suite, "", "apt-cache", append([]string{"show"}, names...)...)
		if err != nil {
			return nil, err
		}
		return ParseStanzas(string(out)), nil
	})
	if err != nil {
		return lockFile{}, err
	}
	debs := filepath.Join(c.dir, "debs")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return lockFile{}, err
	}
	lf := lockFile{Spec: specHash(src)}
	var missing []string
	for _, s := range stanzas {
		p := lockPkg{Name: s.Package, Version: s.Version, File: DebFileName(s.Package, s.Version, s.Architecture), SHA256: s.SHA256}
		lf.Packages = append(lf.Packages, p)
		if checkSHA256(filepath.Join(debs, p.File), p.SHA256) != nil {
			missing = append(missing, p.Name+"="+p.Version)
		}
	}
	if len(missing) > 0 {
		c.logf("debian cache: downloading %d %s packages: %s", len(missing), src.Suite, strings.Join(missing, " "))
		if _, err := c.run(ctx, src.Suite, debs, "apt-get", append([]string{"-q", "download"}, missing...)...); err != nil {
			return lockFile{}, err
		}
	}
	for _, p := range lf.Packages {
		if err := checkSHA256(filepath.Join(debs, p.File), p.SHA256); err != nil {
			return lockFile{}, fmt.Errorf("after apt-get download: %w", err)
		}
	}
	return lf, nil
}

// workspace writes the suite's private apt configuration (sources from the
// host's mirror, read now).
func (c *debianCache) workspace(suite string) error {
	ws := filepath.Join(c.dir, "apt", suite)
	for _, d := range []string{"lists/partial", "cache/archives/partial"} {
		if err := os.MkdirAll(filepath.Join(ws, d), 0o755); err != nil {
			return fmt.Errorf("apt workspace: %w", err)
		}
	}
	entries, err := ReadHostSources(c.etcApt)
	if err != nil {
		return err
	}
	m, err := HostMirror(entries)
	if err != nil {
		return fmt.Errorf("host apt sources in %s: %w", c.etcApt, err)
	}
	files := map[string]string{
		"sources.list": PrivateSourcesList(m, suite),
		"apt.conf":     AptConfig(ws),
	}
	for name, content := range files {
		if b, err := os.ReadFile(filepath.Join(ws, name)); err == nil && string(b) == content {
			continue
		}
		if err := writeFileAtomic(filepath.Join(ws, name), []byte(content)); err != nil {
			return fmt.Errorf("apt workspace: %w", err)
		}
	}
	if _, err := os.Stat(filepath.Join(ws, "status")); os.IsNotExist(err) {
		if err := os.WriteFile(filepath.Join(ws, "status"), nil, 0o644); err != nil {
			return fmt.Errorf("apt workspace: %w", err)
		}
	}
	return nil
}

func (c *debianCache) hasLists(suite string) bool {
	m, _ := filepath.Glob(filepath.Join(c.dir, "apt", suite, "lists", "*_Packages*"))
	return len(m) > 0
}

func (c *debianCache) update(ctx context.Context, suite string) error {
	c.logf("debian cache: apt-get update of %s (private lists in %s)", suite, filepath.Join(c.dir, "apt", suite))
	if _, err := c.run(ctx, suite, "", "apt-get", "-q", "update"); err != nil {
		return err
	}
	if !c.hasLists(suite) {
		return fmt.Errorf("apt-get update of %s fetched no package list", suite)
	}
	c.updated[suite] = true
	return nil
}

// run runs an apt tool with the suite's private configuration. Its output
// is kept for errors only.
func (c *debianCache) run(ctx context.Context, suite, dir, tool string, args ...string) ([]byte, error) {
	conf := filepath.Join(c.dir, "apt", suite, "apt.conf")
	cmd := exec.CommandContext(ctx, tool, append([]string{"-c", conf}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s", tool, strings.Join(args, " "), err, lastLines(stderr.String(), 5))
	}
	return stdout.Bytes(), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// unpackStamp names the file recording which packages a tree holds.
const unpackStamp = ".cacheplane-unpacked"

// unpack unpacks lf's files into roots/<name>, unless the tree already
// holds exactly them. A tree with its own libraries gets the merged-/usr
// links (/lib -> usr/lib, ...) a Debian system has, so the loader path
// the binaries name (/lib64/ld-linux-x86-64.so.2) resolves inside it.
func (c *debianCache) unpack(ctx context.Context, name string, src DebianSource, lf lockFile) (string, error) {
	root := filepath.Join(c.dir, "roots", name)
	js, _ := json.Marshal(lf)
	stamp := hex.EncodeToString(sha256Sum(js))
	if b, err := os.ReadFile(filepath.Join(root, unpackStamp)); err == nil && string(b) == stamp {
		return root, nil
	}
	if err := os.RemoveAll(root); err != nil {
		return "", fmt.Errorf("unpack: %w", err)
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", fmt.Errorf("unpack: %w", err)
	}
	for _, p := range lf.Packages {
		deb := filepath.Join(c.dir, "debs", p.File)
		if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", deb, root).CombinedOutput(); err != nil {
			return "", fmt.Errorf("dpkg-deb -x %s: %w: %s", p.File, err, bytes.TrimSpace(out))
		}
	}
	if src.OwnLibraries {
		for _, d := range []string{"bin", "sbin", "lib", "lib64"} {
			if _, err := os.Lstat(filepath.Join(root, d)); err == nil {
				continue
			}
			if _, err := os.Stat(filepath.Join(root, "usr", d)); err != nil {
				continue
			}
			if err := os.Symlink("usr/"+d, filepath.Join(root, d)); err != nil {
				return "", fmt.Errorf("unpack: %w", err)
			}
		}
	}
	if err := os.WriteFile(filepath.Join(root, unpackStamp), []byte(stamp), 0o644); err != nil {
		return "", fmt.Errorf("unpack: %w", err)
	}
	return root, nil
}
