package packaging

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// hostAptState fingerprints what building must never change: the host's
// apt configuration, package lists and caches, and dpkg's database.
func hostAptState(t *testing.T) map[string]string {
	t.Helper()
	state := map[string]string{}
	for _, root := range []string{"/etc/apt", "/var/lib/apt", "/var/cache/apt", "/var/lib/dpkg/status"} {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if os.IsNotExist(err) {
				return nil
			}
			if err != nil {
				return err
			}
			if d.IsDir() {
				state[p] = "dir"
				return nil
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			sum := fmt.Sprintf("%d %s", fi.Size(), fi.ModTime().UTC().Format(time.RFC3339Nano))
			if fi.Mode().IsRegular() && fi.Size() < 64<<20 {
				b, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				h := sha256.Sum256(b)
				sum += " " + hex.EncodeToString(h[:])
			}
			state[p] = sum
			return nil
		})
		if err != nil {
			t.Fatalf("fingerprint %s: %v", root, err)
		}
	}
	return state
}

func debianImages() []Image {
	var out []Image
	for _, img := range DefaultImages() {
		if img.Debian != nil {
			out = append(out, img)
		}
	}
	return out
}

// TestDebianImagesFromAnEmptyCache downloads, for real, the packages of the
// versions bookworm does not ship (bookworm-backports and trixie, from the
// host's mirror) into an empty cache, builds their images and runs each
// server binary with --version through the image's own loader and
// libraries (WriteImages checks it). Then it rebuilds offline — the mirror
// unreachable — to the same digests, re-downloads a corrupted .deb, and
// checks the host's apt configuration, lists, caches and dpkg status are
// exactly as before.
func TestDebianImagesFromAnEmptyCache(t *testing.T) {
	if testing.Short() {
		t.Skip("downloads Debian packages")
	}
	before := hostAptState(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cache, out := t.TempDir(), t.TempDir()
	imgs := debianImages()
	if len(imgs) < 3 {
		t.Fatalf("want the three Debian-sourced images, got %d", len(imgs))
	}
	start := time.Now()
	ix, err := WriteImages(ctx, out, imgs, Options{DebianDir: cache, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("empty cache: %d images in %s", len(ix.Images), time.Since(start).Round(time.Millisecond))
	if len(ix.Images) != len(imgs) {
		t.Fatalf("built %d images, want %d", len(ix.Images), len(imgs))
	}

	// What each image holds: trixie's loader and libc inside, under the
	// merged-/usr names; bookworm-backports' binaries on the host's libc.
	for _, img := range imgs {
		img.Root = filepath.Join(cache, "roots", img.Name)
		b, err := Build(img)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := ix.Lookup(img.Ref); got.ManifestDigest != b.ManifestDigest {
			t.Errorf("%s: rebuild from the same tree gives %s, index has %s", img.Ref, b.ManifestDigest, got.ManifestDigest)
		}
		for _, want := range img.Binaries {
			if !slices.Contains(b.Files, want) {
				t.Errorf("%s lacks %s", img.Ref, want)
			}
		}
		if img.Debian.OwnLibraries {
			for _, want := range []string{"/lib64", "/usr/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"} {
				if !slices.Contains(b.Files, want) {
					t.Errorf("%s lacks %s", img.Ref, want)
				}
			}
			// The image's libc is trixie's, not the host's.
			host, _ := os.ReadFile("/lib/x86_64-linux-gnu/libc.so.6")
			own, err := os.ReadFile(filepath.Join(img.Root, "usr/lib/x86_64-linux-gnu/libc.so.6"))
			if err != nil || string(host) == string(own) {
				t.Errorf("%s: libc.so.6 is the host's (%v)", img.Ref, err)
			}
		}
	}

	// Offline: the host's sources point at a mirror nobody answers on.
	offline := t.TempDir()
	if err := os.WriteFile(filepath.Join(offline, "sources.list"), []byte("deb http://127.0.0.1:9/debian bookworm main\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	again, err := WriteImages(ctx, t.TempDir(), imgs, Options{DebianDir: cache, EtcApt: offline, Logf: t.Logf})
	if err != nil {
		t.Fatalf("offline rebuild: %v", err)
	}
	t.Logf("warm cache, mirror unreachable: %d images in %s", len(again.Images), time.Since(start).Round(time.Millisecond))
	for i := range ix.Images {
		if again.Images[i] != ix.Images[i] {
			t.Errorf("offline rebuild: %+v, first build %+v", again.Images[i], ix.Images[i])
		}
	}

	// A corrupted download is noticed and fetched again.
	debs, err := filepath.Glob(filepath.Join(cache, "debs", "valkey-server_8.0.1*.deb"))
	if err != nil || len(debs) != 1 {
		t.Fatalf("valkey-server 8.0.1 .deb: %v %v", debs, err)
	}
	if err := os.WriteFile(debs[0], []byte("not a deb"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteImages(ctx, t.TempDir(), imgs[:1], Options{DebianDir: cache, EtcApt: offline}); err == nil {
		t.Fatal("a corrupted .deb was used offline")
	}
	if _, err := WriteImages(ctx, t.TempDir(), imgs[:1], Options{DebianDir: cache, Logf: t.Logf}); err != nil {
		t.Fatalf("re-download of a corrupted .deb: %v", err)
	}

	after := hostAptState(t)
	var changed []string
	for p, v := range before {
		if after[p] != v {
			changed = append(changed, p)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			changed = append(changed, p)
		}
	}
	sort.Strings(changed)
	if len(changed) > 0 {
		t.Errorf("the host's apt state changed: %s", strings.Join(changed, ", "))
	}
}
