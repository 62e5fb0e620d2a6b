package packaging

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
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
	var files []string
	for _, b := range img.Binaries {
		if _, err := os.Stat(b); err != nil {
			return nil, fmt.Errorf("image %s: %s %w", img.Ref, b, ErrNotInstalled)
		}
		files = append(files, b)
	}
	for _, b := range img.Optional {
		if _, err := os.Stat(b); err == nil {
			files = append(files, b)
		}
	}
	for _, f := range files {
		if err := fs.addHost(f); err != nil {
			return nil, fmt.Errorf("image %s: %w", img.Ref, err)
		}
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm()&0o111 == 0 {
			continue
		}
		libs, err := sharedLibs(f)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", img.Ref, err)
		}
		for _, l := range libs {
			if err := fs.addHost(l); err != nil {
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
			"created_by": "cacheplane packaging: " + strings.Join(files, " ") + " and their libraries",
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

// WriteDir builds every image into dir as <Name>.tar and writes the index.
// An image whose binaries are not installed is skipped (and reported through
// skipped) when optional is true for it, an error otherwise. Files are
// written to a temporary name and renamed, so a reader never sees half.
func WriteDir(dir string, imgs []Image, optional func(Image) bool, logf func(format string, args ...any)) (Index, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	var ix Index
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return ix, err
	}
	for _, img := range imgs {
		start := time.Now()
		b, err := Build(img)
		if errors.Is(err, ErrNotInstalled) && optional != nil && optional(img) {
			logf("skip %s: %v", img.Ref, err)
			continue
		}
		if err != nil {
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
