package packaging

import (
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// multiarch is Debian's library directory name for an ELF machine.
func multiarch(m elf.Machine) (string, error) {
	switch m {
	case elf.EM_X86_64:
		return "x86_64-linux-gnu", nil
	case elf.EM_AARCH64:
		return "aarch64-linux-gnu", nil
	}
	return "", fmt.Errorf("no Debian multiarch name for ELF machine %s", m)
}

// treeLoader is how to run a binary of an unpacked tree with the tree's
// own loader and libraries, without a chroot.
type treeLoader struct {
	root       string
	interp     string   // image path of the loader, from PT_INTERP
	hostInterp string   // host path of the loader inside root
	libPath    []string // host paths of the tree's library directories
}

// loaderFor reads the program interpreter of image path bin in root and
// finds the tree's library directories.
func loaderFor(root, bin string) (treeLoader, error) {
	hostBin, err := resolveIn(root, bin)
	if err != nil {
		return treeLoader{}, err
	}
	f, err := elf.Open(hostBin)
	if err != nil {
		return treeLoader{}, fmt.Errorf("read %s: %w", bin, err)
	}
	defer f.Close()
	l := treeLoader{root: root}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				return treeLoader{}, fmt.Errorf("read %s: interpreter: %w", bin, err)
			}
			l.interp = strings.TrimRight(string(b), "\x00")
		}
	}
	if l.interp == "" {
		return treeLoader{}, fmt.Errorf("%s has no program interpreter (static?)", bin)
	}
	if l.hostInterp, err = resolveIn(root, l.interp); err != nil {
		return treeLoader{}, fmt.Errorf("%s: its loader %s is not in the unpacked packages: %w", bin, l.interp, err)
	}
	ma, err := multiarch(f.Machine)
	if err != nil {
		return treeLoader{}, err
	}
	seen := map[string]bool{}
	for _, d := range []string{"/lib/" + ma, "/usr/lib/" + ma, "/lib", "/usr/lib"} {
		h, err := resolveIn(root, d)
		if err != nil || seen[h] {
			continue
		}
		if fi, err := os.Stat(h); err == nil && fi.IsDir() {
			seen[h] = true
			l.libPath = append(l.libPath, h)
		}
	}
	return l, nil
}

// command is the argv that runs image path bin (with argv[0] = bin, so
// names a binary switches on work) through the tree's loader and
// libraries.
func (l treeLoader) command(bin string, args ...string) ([]string, error) {
	hostBin, err := resolveIn(l.root, bin)
	if err != nil {
		return nil, err
	}
	return append([]string{l.hostInterp, "--library-path", strings.Join(l.libPath, ":"), "--argv0", bin, hostBin}, args...), nil
}

// libs lists the image paths of the libraries bin loads and the loader,
// all inside the tree. A library the tree lacks would be found on the host
// by the loader's fallback: that is an error naming it.
func (l treeLoader) libs(bin string) ([]string, error) {
	hostBin, err := resolveIn(l.root, bin)
	if err != nil {
		return nil, err
	}
	out, err := exec.Command(l.hostInterp, "--library-path", strings.Join(l.libPath, ":"), "--list", hostBin).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("%s --list %s: %w: %s", l.interp, bin, err, strings.TrimSpace(string(out)))
	}
	listed, err := parseLdd(out)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", bin, err)
	}
	libs := []string{l.interp}
	var outside []string
	for _, p := range listed {
		rel, ok := strings.CutPrefix(p, l.root+"/")
		if !ok {
			outside = append(outside, p)
			continue
		}
		libs = append(libs, "/"+rel)
	}
	if len(outside) > 0 {
		return nil, fmt.Errorf("%s: libraries missing from the unpacked packages (the loader found them on the host): %s", bin, strings.Join(outside, ", "))
	}
	return libs, nil
}
