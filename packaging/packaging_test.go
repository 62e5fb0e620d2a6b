package packaging

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

func TestParseLdd(t *testing.T) {
	out := "\tlinux-vdso.so.1 (0x00007ffd)\n" +
		"\tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f9d)\n" +
		"\t/lib64/ld-linux-x86-64.so.2 (0x00007f9d)\n"
	got, err := parseLdd([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/lib/x86_64-linux-gnu/libm.so.6", "/lib64/ld-linux-x86-64.so.2"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if _, err := parseLdd([]byte("\tlibnope.so.1 => not found\n")); err == nil || !strings.Contains(err.Error(), "libnope.so.1") {
		t.Fatalf("missing library: err = %v, want it named", err)
	}
}

func redisImage(t *testing.T) Image {
	t.Helper()
	img := DefaultImages()[0]
	for _, b := range img.Binaries {
		if _, err := os.Stat(b); err != nil {
			t.Fatalf("%s is not installed (apt-get install redis-server redis-tools): %v", b, err)
		}
	}
	return img
}

var (
	builtOnce sync.Once
	built     *Built
	builtErr  error
)

// buildRedis builds the redis image once for all tests (under -race a
// build takes seconds).
func buildRedis(t *testing.T) (Image, *Built) {
	t.Helper()
	img := redisImage(t)
	builtOnce.Do(func() { built, builtErr = Build(img) })
	if builtErr != nil {
		t.Fatal(builtErr)
	}
	return img, built
}

func TestBuildIsReproducible(t *testing.T) {
	img, a := buildRedis(t)
	b, err := Build(img)
	if err != nil {
		t.Fatal(err)
	}
	if a.ManifestDigest != b.ManifestDigest {
		t.Fatalf("manifest digest differs between builds: %s vs %s", a.ManifestDigest, b.ManifestDigest)
	}
	if !bytes.Equal(a.Layout, b.Layout) {
		t.Fatal("layout tarball bytes differ between builds")
	}
	t.Logf("%s: %s, %d bytes", img.Ref, a.ManifestDigest, len(a.Layout))
}

// readLayout returns the blobs of an OCI layout tarball by path.
func readLayout(t *testing.T, layout []byte) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(layout))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[hdr.Name] = b
	}
}

func blob(t *testing.T, files map[string][]byte, digest string) []byte {
	t.Helper()
	b, ok := files["blobs/sha256/"+strings.TrimPrefix(digest, "sha256:")]
	if !ok {
		t.Fatalf("blob %s missing from layout", digest)
	}
	if got := digestOf(b); got != digest {
		t.Fatalf("blob %s has digest %s", digest, got)
	}
	return b
}

func TestLayoutAndLayer(t *testing.T) {
	img, built := buildRedis(t)
	files := readLayout(t, built.Layout)
	if string(files["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Fatalf("oci-layout = %q", files["oci-layout"])
	}
	var index struct {
		Manifests []struct {
			Digest      string
			Annotations map[string]string
		}
	}
	if err := json.Unmarshal(files["index.json"], &index); err != nil {
		t.Fatal(err)
	}
	if len(index.Manifests) != 1 {
		t.Fatalf("index has %d manifests", len(index.Manifests))
	}
	m := index.Manifests[0]
	if m.Digest != built.ManifestDigest || m.Annotations[AnnotationImageName] != img.Ref || m.Annotations[AnnotationRefName] != "7.0" {
		t.Fatalf("index entry = %+v", m)
	}
	var manifest struct {
		Config struct{ Digest string }
		Layers []struct{ Digest, MediaType string }
	}
	if err := json.Unmarshal(blob(t, files, m.Digest), &manifest); err != nil {
		t.Fatal(err)
	}
	var config struct {
		Config struct {
			Entrypoint, Cmd []string
		}
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		}
	}
	if err := json.Unmarshal(blob(t, files, manifest.Config.Digest), &config); err != nil {
		t.Fatal(err)
	}
	if len(config.Config.Entrypoint) != 0 || len(config.Config.Cmd) != 0 {
		t.Fatalf("config has an entrypoint/cmd: %+v", config.Config)
	}
	if len(manifest.Layers) != 1 || len(config.RootFS.DiffIDs) != 1 {
		t.Fatalf("want one layer, manifest %+v config %+v", manifest.Layers, config.RootFS)
	}
	layer := blob(t, files, manifest.Layers[0].Digest)
	if manifest.Layers[0].MediaType != MediaTypeLayer {
		t.Fatalf("layer media type %s", manifest.Layers[0].MediaType)
	}
	if got := digestOf(layer); got != config.RootFS.DiffIDs[0] {
		t.Fatalf("diff id %s, layer digest %s", config.RootFS.DiffIDs[0], got)
	}

	entries := map[string]*tar.Header{}
	var order []string
	tr := tar.NewReader(bytes.NewReader(layer))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Uid != 0 || hdr.Gid != 0 || !hdr.ModTime.Equal(Epoch) {
			t.Errorf("%s: uid %d gid %d mtime %s", hdr.Name, hdr.Uid, hdr.Gid, hdr.ModTime)
		}
		name := "/" + strings.TrimSuffix(hdr.Name, "/")
		entries[name] = hdr
		order = append(order, name)
	}
	if !slices.IsSorted(order) {
		t.Errorf("layer entries are not sorted: %v", order)
	}
	// redis-server is a symlink to the one binary that switches on argv[0].
	target, err := os.Readlink("/usr/bin/redis-server")
	if err == nil {
		if h := entries["/usr/bin/redis-server"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != target {
			t.Errorf("/usr/bin/redis-server: want symlink to %s, got %+v", target, h)
		}
	}
	want := []string{"/usr/bin/redis-cli", "/tmp", "/etc/passwd"}
	for _, l := range []string{"/lib", "/lib64"} {
		if fi, err := os.Lstat(l); err == nil && fi.Mode()&os.ModeSymlink != 0 {
			if h := entries[l]; h == nil || h.Typeflag != tar.TypeSymlink {
				t.Errorf("%s: want a symlink as on the host, got %+v", l, h)
			}
		}
	}
	resolved, err := filepath.EvalSymlinks("/usr/bin/redis-server")
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, resolved)
	libs, err := sharedLibs("/usr/bin/redis-server")
	if err != nil {
		t.Fatal(err)
	}
	if len(libs) == 0 {
		t.Fatal("ldd lists no libraries for redis-server")
	}
	for _, l := range libs {
		r, err := filepath.EvalSymlinks(l)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, r)
	}
	for _, w := range want {
		if entries[w] == nil {
			t.Errorf("layer misses %s", w)
		}
	}
	if h := entries["/tmp"]; h != nil && h.Mode&0o1777 != 0o1777 {
		t.Errorf("/tmp mode %o", h.Mode)
	}
}

func TestWriteDirSkipsOptional(t *testing.T) {
	dir := t.TempDir()
	imgs := []Image{
		{Name: "true", Ref: "cacheplane.local/true:1", Binaries: []string{"/usr/bin/true"}},
		{Name: "nope", Ref: "cacheplane.local/nope:1", Binaries: []string{"/usr/bin/no-such-binary-here"}},
	}
	ix, err := WriteDir(dir, imgs, func(img Image) bool { return img.Name == "nope" }, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	read, err := ReadIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(read.Images) != 1 || read.Images[0] != ix.Images[0] {
		t.Fatalf("index %+v, written %+v", read, ix)
	}
	e, ok := read.Lookup(imgs[0].Ref)
	if !ok {
		t.Fatalf("index lacks %s", imgs[0].Ref)
	}
	if _, err := os.Stat(filepath.Join(dir, e.File)); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteDir(t.TempDir(), imgs, nil, t.Logf); err == nil {
		t.Fatal("a missing required binary did not fail the build")
	}
}
