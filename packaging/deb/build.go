package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
)

// Options of one build.
type Options struct {
	Out     string // where the .deb files go
	Images  string // make images' output directory
	Root    string // repository top directory
	Version string // Debian version; "" = DebVersion of git describe
	Arch    string // Debian architecture; "" = GOARCH (amd64, arm64 have the same names)
}

// Package is one package this program builds.
type Package struct {
	Name   string // Debian package name = nfpm config file name without .yaml
	Binary string // the binary it carries, in /usr/bin
	Main   string // the Go package of the binary
}

// Packages are built in this order.
var Packages = []Package{
	{Name: "cacheplane-coordinator", Binary: "cacheplane-coordinator", Main: "./cmd/coordinator"},
	{Name: "cacheplane-agent", Binary: "cacheplane-agent", Main: "./cmd/agent"},
	{Name: "cacheplane", Binary: "cacheplane", Main: "./cmd/cacheplane"},
}

// Build builds the binaries and the packages; it returns the .deb paths.
func Build(ctx context.Context, o Options) ([]string, error) {
	root, err := filepath.Abs(o.Root)
	if err != nil {
		return nil, err
	}
	describe, err := git(ctx, root, "describe", "--tags", "--always", "--dirty")
	if err != nil {
		return nil, err
	}
	version := o.Version
	if version == "" {
		n, err := git(ctx, root, "rev-list", "--count", "HEAD")
		if err != nil {
			return nil, err
		}
		count, err := strconv.Atoi(n)
		if err != nil {
			return nil, fmt.Errorf("git rev-list --count: %q", n)
		}
		if version, err = DebVersion(describe, count); err != nil {
			return nil, err
		}
	}
	arch := o.Arch
	if arch == "" {
		arch = runtime.GOARCH
	}
	ct, err := git(ctx, root, "log", "-1", "--format=%ct")
	if err != nil {
		return nil, err
	}
	secs, err := strconv.ParseInt(ct, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("commit time %q: %w", ct, err)
	}
	mtime := time.Unix(secs, 0).UTC()
	images, err := filepath.Abs(o.Images)
	if err != nil {
		return nil, err
	}
	if err := checkImages(images); err != nil {
		return nil, err
	}
	out, err := filepath.Abs(o.Out)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	bin, err := os.MkdirTemp(out, ".bin-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(bin)

	vars := map[string]string{
		"VERSION": version, "ARCH": arch, "BIN": bin, "ROOT": root,
		"SRC": filepath.Join(root, "packaging", "deb"), "IMAGES": images,
	}
	var debs []string
	for _, p := range Packages {
		if err := buildBinary(ctx, root, p, describe, filepath.Join(bin, p.Binary)); err != nil {
			return nil, err
		}
		path, err := buildPackage(p, vars, mtime, out)
		if err != nil {
			return nil, err
		}
		debs = append(debs, path)
	}
	return debs, nil
}

func git(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = strings.TrimSpace(string(ee.Stderr))
		}
		return "", fmt.Errorf("git %s: %v %s", strings.Join(args, " "), err, msg)
	}
	return strings.TrimSpace(string(out)), nil
}

// checkImages makes sure every image images.json names is there: an agent
// package without them would need a registry.
func checkImages(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "images.json"))
	if err != nil {
		return fmt.Errorf("images: %w (run make images)", err)
	}
	var idx struct {
		Images []struct {
			Ref  string `json:"ref"`
			File string `json:"file"`
		} `json:"images"`
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		return fmt.Errorf("images: %s/images.json: %w", dir, err)
	}
	if len(idx.Images) == 0 {
		return fmt.Errorf("images: %s/images.json lists no image (run make images)", dir)
	}
	for _, im := range idx.Images {
		if _, err := os.Stat(filepath.Join(dir, im.File)); err != nil {
			return fmt.Errorf("images: %s (%s): %w (run make images)", im.File, im.Ref, err)
		}
	}
	return nil
}

// buildBinary builds one static binary; -X sets the version both the CLI
// (cli.Version) and the agent (main.Version) print.
func buildBinary(ctx context.Context, root string, p Package, version, out string) error {
	ldflags := "-s -w -X github.com/cacheplane/cacheplane/cli.Version=" + version + " -X main.Version=" + version +
		" -X github.com/cacheplane/cacheplane/coordinator.Release=" + version
	// The Makefile's GOTAGS (no_dynamic_plugins: no plugin package, whose
	// exports keep every symbol; CGO_ENABLED=0 leaves it out too).
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-tags", "no_dynamic_plugins", "-ldflags", ldflags, "-o", out, p.Main)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", p.Main, err, b)
	}
	return nil
}

// buildPackage reads <name>.yaml with vars expanded (${NAME}: an unknown
// name is an error; nothing is read from the environment) and writes the
// .deb into out.
func buildPackage(p Package, vars map[string]string, mtime time.Time, out string) (string, error) {
	cfgPath := filepath.Join(vars["SRC"], p.Name+".yaml")
	text, err := os.ReadFile(cfgPath)
	if err != nil {
		return "", err
	}
	var missing []string
	expanded := os.Expand(string(text), func(k string) string {
		v, ok := vars[k]
		if !ok {
			missing = append(missing, k)
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("%s: unknown variables %q", cfgPath, missing)
	}
	// The mapping only answers nfpm's own questions (signing passphrases).
	cfg, err := nfpm.ParseWithEnvMapping(strings.NewReader(expanded), func(string) string { return "" })
	if err != nil {
		return "", fmt.Errorf("%s: %w", cfgPath, err)
	}
	info, err := cfg.Get("deb")
	if err != nil {
		return "", fmt.Errorf("%s: %w", cfgPath, err)
	}
	info.MTime = mtime
	if err := nfpm.PrepareForPackager(info, "deb"); err != nil {
		return "", fmt.Errorf("%s: %w", cfgPath, err)
	}
	if info.Name != p.Name {
		return "", fmt.Errorf("%s: name %q, want %q", cfgPath, info.Name, p.Name)
	}
	path := filepath.Join(out, deb.Default.ConventionalFileName(info))
	tmp, err := os.CreateTemp(out, ".deb-")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if err := deb.Default.Package(info, tmp); err != nil {
		tmp.Close()
		return "", fmt.Errorf("package %s: %w", p.Name, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", err
	}
	return path, nil
}
