package packaging

import (
	"archive/tar"
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
	goruntime "runtime"
	"sort"
	"strings"
	"time"
)

// Media types and annotations of the OCI image layout.
const (
	MediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	MediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	MediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar"

	// AnnotationRefName is the OCI tag annotation ("7.0").
	AnnotationRefName = "org.opencontainers.image.ref.name"
	// AnnotationImageName is the full reference containerd names the
	// imported image after ("cacheplane.local/redis:7.0").
	AnnotationImageName = "io.containerd.image.name"
)

// Image describes one image to build.
type Image struct {
	// Name is the file name (without .tar) in the output directory.
	Name string
	// Ref is the image reference, e.g. api.ImageRedis7.
	Ref string
	// Binaries must all be installed; each is copied with its libraries,
	// keeping symlinks (redis-server -> redis-check-rdb) as they are.
	Binaries []string
	// Optional files are added (with their libraries when executable) if
	// present, skipped otherwise.
	Optional []string
	// Version, when set, is the upstream version Binaries[0] must report
	// ("v=7.0.15" in `--version`): WriteImages runs it, through the image's
	// own loader and libraries when it has them, before writing the image.
	Version string
	// Debian, when set, is where the files come from: packages of another
	// suite, unpacked into Root by WriteImages (Options.DebianDir).
	Debian *DebianSource
	// Root is the tree Binaries and Optional are read from ("" = the
	// host). With Debian.OwnLibraries the libraries are resolved inside it
	// too; otherwise they are the host's.
	Root string
}

// ownLibraries reports whether the image carries its tree's libraries.
func (img Image) ownLibraries() bool {
	return img.Root != "" && img.Debian != nil && img.Debian.OwnLibraries
}

// ErrNotInstalled is returned (wrapped) by Build when a binary of the image
// is not installed on this machine.
var ErrNotInstalled = errors.New("not installed")

// Built is the result of building one image.
type Built struct {
	Ref string
	// ManifestDigest is "sha256:..." of the image manifest; the same
	// binaries give the same digest.
	ManifestDigest string
	// Layout is the OCI image-layout tarball.
	Layout []byte
	// Files lists every path in the layer, sorted (for tests and logs).
	Files []string
}

// baseFiles are the few /etc files a process may read through libc.
var baseFiles = map[string]string{
	"/etc/passwd":        "root:x:0:0:root:/root:/usr/sbin/nologin\nredis:x:999:999:redis:/var/lib/redis:/usr/sbin/nologin\nhaproxy:x:998:998:haproxy:/var/lib/haproxy:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
	"/etc/group":         "root:x:0:\nredis:x:999:\nhaproxy:x:998:\nnogroup:x:65534:\n",
	"/etc/nsswitch.conf": "passwd: files\ngroup: files\nhosts: files dns\n",
	"/etc/hosts":         "127.0.0.1\tlocalhost\n::1\tlocalhost\n",
}

// Build builds img's OCI layout tarball in memory.
func Build(img Image) (*Built, error) {
	fs := newRootfs()
	for _, d := range []string{"/tmp", "/var/tmp"} {
		fs.dir(d, 0o1777)
	}
	for _, d := range []string{"/dev", "/proc", "/sys", "/run", "/root", "/data", "/var/lib"} {
		fs.dir(d, 0o755)
	}
	for p, c := range baseFiles {
		fs.literal(p, 0o644, []byte(c))
	}
	if img.Debian != nil && img.Root == "" {
		return nil, fmt.Errorf("image %s: built from %s packages, which are not unpacked (no Debian cache dir given): %w", img.Ref, img.Debian.Suite, ErrNotInstalled)
	}
	var files []string
	for _, b := range img.Binaries {
		if _, err := resolveIn(img.Root, b); err != nil {
			where := ""
			if img.Root != "" {
				where = " in " + img.Root
			}
			return nil, fmt.Errorf("image %s: %s%s %w", img.Ref, b, where, ErrNotInstalled)
		}
		files = append(files, b)
	}
	for _, b := range img.Optional {
		if _, err := resolveIn(img.Root, b); err == nil {
			files = append(files, b)
		}
	}
	var loader treeLoader
	if img.ownLibraries() {
		var err error
		if loader, err = loaderFor(img.Root, img.Binaries[0]); err != nil {
			return nil, fmt.Errorf("image %s: %w", img.Ref, err)
		}
	}
	for _, f := range files {
		if err := fs.addFrom(img.Root, f); err != nil {
			return nil, fmt.Errorf("image %s: %w", img.Ref, err)
		}
		hostPath, err := resolveIn(img.Root, f)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", img.Ref, err)
		}
		if fi, err := os.Stat(hostPath); err != nil || fi.Mode().Perm()&0o111 == 0 {
			continue
		}
		libRoot := ""
		var libs []string
		if img.ownLibraries() {
			libRoot = img.Root
			libs, err = loader.libs(f)
		} else {
			libs, err = sharedLibs(hostPath)
		}
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", img.Ref, err)
		}
		for _, l := range libs {
			if err := fs.addFrom(libRoot, l); err != nil {
				return nil, fmt.Errorf("image %s: library of %s: %w", img.Ref, f, err)
			}
		}
	}

	// The layer is an uncompressed tar: these images never cross a
	// network, importing skips decompression, and the digest does not
	// depend on a compressor's output (which may change between Go
	// releases), only on the files.
	var layer bytes.Buffer
	if err := fs.writeTar(&layer); err != nil {
		return nil, fmt.Errorf("image %s: layer: %w", img.Ref, err)
	}
	diffID := digestOf(layer.Bytes())

	created := Epoch.Format(time.RFC3339)
	config := map[string]any{
		"created":      created,
		"architecture": goruntime.GOARCH,
		"os":           "linux",
		"config": map[string]any{
			"Env":        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			"WorkingDir": "/",
		},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{diffID}},
		"history": []map[string]any{{
			"created":    created,
			"created_by": createdBy(img, files),
		}},
	}
	configJSON, err := json.Marshal(config)
	if err != nil {
		return nil, err
	}
	manifest := map[string]any{
		"schemaVersion": 2,
		"mediaType":     MediaTypeManifest,
		"config":        descriptor(MediaTypeConfig, configJSON, nil, nil),
		"layers":        []any{descriptor(MediaTypeLayer, layer.Bytes(), nil, nil)},
	}
	manifestJSON, err := json.Marshal(manifest)
	if err != nil {
		return nil, err
	}
	tag := img.Ref
	if i := strings.LastIndex(tag, ":"); i > strings.LastIndex(tag, "/") {
		tag = tag[i+1:]
	}
	index := map[string]any{
		"schemaVersion": 2,
		"mediaType":     MediaTypeIndex,
		"manifests": []any{descriptor(MediaTypeManifest, manifestJSON,
			map[string]string{AnnotationRefName: tag, AnnotationImageName: img.Ref},
			map[string]string{"architecture": goruntime.GOARCH, "os": "linux"})},
	}
	indexJSON, err := json.Marshal(index)
	if err != nil {
		return nil, err
	}

	blobs := map[string][]byte{}
	for _, b := range [][]byte{configJSON, layer.Bytes(), manifestJSON} {
		blobs[strings.TrimPrefix(digestOf(b), "sha256:")] = b
	}
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	add := func(name string, mode int64, data []byte) error {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: Epoch, Format: tar.FormatPAX}
		if strings.HasSuffix(name, "/") {
			hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeDir, 0o755, 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := add("oci-layout", 0o644, []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return nil, err
	}
	if err := add("index.json", 0o644, indexJSON); err != nil {
		return nil, err
	}
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := add(d, 0, nil); err != nil {
			return nil, err
		}
	}
	hexes := make([]string, 0, len(blobs))
	for h := range blobs {
		hexes = append(hexes, h)
	}
	sort.Strings(hexes)
	for _, h := range hexes {
		if err := add("blobs/sha256/"+h, 0o644, blobs[h]); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}

	names := make([]string, 0, len(fs.entries))
	for n := range fs.entries {
		names = append(names, n)
	}
	sort.Strings(names)
	return &Built{Ref: img.Ref, ManifestDigest: digestOf(manifestJSON), Layout: out.Bytes(), Files: names}, nil
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func descriptor(mediaType string, blob []byte, annotations, platform map[string]string) map[string]any {
	d := map[string]any{"mediaType": mediaType, "digest": digestOf(blob), "size": len(blob)}
	if annotations != nil {
		d["annotations"] = annotations
	}
	if platform != nil {
		d["platform"] = platform
	}
	return d
}

// IndexFile is the name of the index in an image directory.
const IndexFile = "images.json"

// Index lists the images of a directory written by WriteDir.
type Index struct {
	Images []IndexEntry `json:"images"`
}

// IndexEntry is one image of an Index.
type IndexEntry struct {
	Ref            string `json:"ref"`
	File           string `json:"file"` // relative to the directory
	ManifestDigest string `json:"manifestDigest"`
}

// Lookup returns the entry for ref.
func (ix Index) Lookup(ref string) (IndexEntry, bool) {
	for _, e := range ix.Images {
		if e.Ref == ref {
			return e, true
		}
	}
	return IndexEntry{}, false
}

// ReadIndex reads dir's index.
func ReadIndex(dir string) (Index, error) {
	var ix Index
	b, err := os.ReadFile(filepath.Join(dir, IndexFile))
	if err != nil {
		return ix, fmt.Errorf("read image index: %w", err)
	}
	if err := json.Unmarshal(b, &ix); err != nil {
		return ix, fmt.Errorf("read image index %s: %w", filepath.Join(dir, IndexFile), err)
	}
	return ix, nil
}

// Options tune WriteImages.
type Options struct {
	// DebianDir keeps what images built from Debian packages of other
	// suites need (private apt configuration and lists, the .deb files,
	// the unpacked trees), so that a rebuild is fast and offline. Empty:
	// such images count as not installed.
	DebianDir string
	// EtcApt is the host's apt configuration directory, read (never
	// written) for the Debian mirror; default /etc/apt.
	EtcApt string
	// Optional reports whether an image whose files are missing is skipped
	// (and logged) instead of failing the build.
	Optional func(Image) bool
	// Logf receives progress lines; nil discards them.
	Logf func(format string, args ...any)
}

// WriteDir builds every image into dir with the host's files only (images
// from Debian packages are skipped when optional says so).
func WriteDir(dir string, imgs []Image, optional func(Image) bool, logf func(format string, args ...any)) (Index, error) {
	return WriteImages(context.Background(), dir, imgs, Options{Optional: optional, Logf: logf})
}

// WriteImages builds every image into dir as <Name>.tar and writes the
// index. Images with a Debian source are first unpacked from the cache in
// opts.DebianDir (downloading what it lacks). An image whose files are
// missing is skipped when opts.Optional says so, an error otherwise. Each
// image with a Version runs once to check it. Files are written to a
// temporary name and renamed, so a reader never sees half.
func WriteImages(ctx context.Context, dir string, imgs []Image, opts Options) (Index, error) {
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	var ix Index
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return ix, err
	}
	var cache *debianCache
	if opts.DebianDir != "" {
		etc := opts.EtcApt
		if etc == "" {
			etc = "/etc/apt"
		}
		abs, err := filepath.Abs(opts.DebianDir)
		if err != nil {
			return ix, err
		}
		cache = &debianCache{dir: abs, etcApt: etc, logf: logf, updated: map[string]bool{}}
		unlock, err := cache.lock()
		if err != nil {
			return ix, err
		}
		defer unlock()
	}
	for _, img := range imgs {
		start := time.Now()
		if img.Debian != nil && img.Root == "" && cache != nil {
			root, err := cache.prepare(ctx, img)
			if err != nil {
				return ix, err
			}
			img.Root = root
		}
		b, err := Build(img)
		if errors.Is(err, ErrNotInstalled) && opts.Optional != nil && opts.Optional(img) {
			logf("skip %s: %v", img.Ref, err)
			continue
		}
		if err != nil {
			return ix, err
		}
		if err := CheckVersion(ctx, img); err != nil {
			return ix, err
		}
		file := img.Name + ".tar"
		if err := writeFileAtomic(filepath.Join(dir, file), b.Layout); err != nil {
			return ix, fmt.Errorf("image %s: %w", img.Ref, err)
		}
		ix.Images = append(ix.Images, IndexEntry{Ref: img.Ref, File: file, ManifestDigest: b.ManifestDigest})
		logf("built %s -> %s (%d files, %.1f MB, %s) in %s", img.Ref, filepath.Join(dir, file),
			len(b.Files), float64(len(b.Layout))/(1<<20), b.ManifestDigest, time.Since(start).Round(time.Millisecond))
	}
	js, err := json.MarshalIndent(ix, "", "  ")
	if err != nil {
		return ix, err
	}
	return ix, writeFileAtomic(filepath.Join(dir, IndexFile), append(js, '\n'))
}

// CheckVersion runs img's first binary with --version (through the image's
// own loader and libraries when it carries them, with argv[0] as inside the
// image) and checks it reports img.Version. No Version: nothing to check.
func CheckVersion(ctx context.Context, img Image) error {
	if img.Version == "" {
		return nil
	}
	bin := img.Binaries[0]
	// Without its own libraries, the binary runs on the host's loader: its
	// path (symlink included) keeps argv[0] as inside the image.
	argv := []string{filepath.Join(img.Root, bin), "--version"}
	if img.ownLibraries() {
		l, err := loaderFor(img.Root, bin)
		if err == nil {
			argv, err = l.command(bin, "--version")
		}
		if err != nil {
			return fmt.Errorf("image %s: %w", img.Ref, err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("image %s: %s --version: %w: %s", img.Ref, bin, err, bytes.TrimSpace(out))
	}
	if !strings.Contains(string(out), "v="+img.Version+" ") {
		return fmt.Errorf("image %s: %s --version says %q, want v=%s", img.Ref, bin, bytes.TrimSpace(out), img.Version)
	}
	return nil
}

func createdBy(img Image, files []string) string {
	s := "cacheplane packaging: " + strings.Join(files, " ") + " and their libraries"
	if img.Debian != nil {
		s += fmt.Sprintf(", from Debian %s packages %s (%s)", img.Debian.Suite, strings.Join(img.Debian.Packages, " "), img.Debian.Version)
		if !img.Debian.OwnLibraries {
			s += " with the host's libraries"
		}
	}
	return s
}

func writeFileAtomic(name string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(name), ".tmp-"+filepath.Base(name))
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := io.Copy(f, bytes.NewReader(data)); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), name)
}
