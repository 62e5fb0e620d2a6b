package packaging

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// This file holds the pure half of building images from Debian packages of
// another suite: reading the host's apt sources for its mirror, writing the
// private apt configuration, and reading apt-cache's answers. debian.go runs
// apt-get and dpkg-deb.

// SourceEntry is one entry of an apt sources file, one-line or deb822.
type SourceEntry struct {
	Types      []string // deb, deb-src
	URIs       []string
	Suites     []string
	Components []string
	SignedBy   string // a keyring path; empty if none or inline
}

// ParseDeb822Sources reads a deb822 .sources file (paragraphs of
// "Field: value", "#" comments). Disabled entries (Enabled: no) are left out.
func ParseDeb822Sources(text string) []SourceEntry {
	var out []SourceEntry
	for _, para := range paragraphs(text, true) {
		if strings.EqualFold(para["enabled"], "no") {
			continue
		}
		e := SourceEntry{
			Types:      strings.Fields(para["types"]),
			URIs:       strings.Fields(para["uris"]),
			Suites:     strings.Fields(para["suites"]),
			Components: strings.Fields(para["components"]),
		}
		// Signed-By is a keyring path (or several), or an inline key
		// block (several lines): only a path is carried over.
		if sb := strings.TrimSpace(para["signed-by"]); sb != "" && !strings.Contains(sb, "\n") {
			e.SignedBy = strings.Fields(sb)[0]
		}
		if len(e.Types) > 0 && len(e.URIs) > 0 {
			out = append(out, e)
		}
	}
	return out
}

// ParseOneLineSources reads a sources.list file: "deb [opts] URI suite
// component...".
func ParseOneLineSources(text string) []SourceEntry {
	var out []SourceEntry
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if i := strings.Index(line, "#"); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		f := strings.Fields(line)
		if len(f) < 3 || (f[0] != "deb" && f[0] != "deb-src") {
			continue
		}
		e := SourceEntry{Types: []string{f[0]}}
		rest := f[1:]
		if strings.HasPrefix(rest[0], "[") {
			// Options may span fields: "[ arch=amd64 signed-by=/k ]".
			var opts []string
			for len(rest) > 0 {
				o := rest[0]
				rest = rest[1:]
				opts = append(opts, strings.Trim(o, "[]"))
				if strings.HasSuffix(o, "]") {
					break
				}
			}
			for _, o := range opts {
				if k, v, ok := strings.Cut(o, "="); ok && k == "signed-by" {
					e.SignedBy = strings.Split(v, ",")[0]
				}
			}
		}
		if len(rest) < 2 {
			continue
		}
		e.URIs, e.Suites, e.Components = []string{rest[0]}, []string{rest[1]}, rest[2:]
		out = append(out, e)
	}
	return out
}

// paragraphs splits deb822 text into field maps (lower-case names);
// continuation lines are joined with "\n". Comments are dropped when
// comments is true.
func paragraphs(text string, comments bool) []map[string]string {
	var out []map[string]string
	cur := map[string]string{}
	last := ""
	flush := func() {
		if len(cur) > 0 {
			out = append(out, cur)
		}
		cur, last = map[string]string{}, ""
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case comments && strings.HasPrefix(strings.TrimSpace(line), "#"):
			continue
		case strings.TrimSpace(line) == "":
			flush()
		case (line[0] == ' ' || line[0] == '\t') && last != "":
			cur[last] += "\n" + strings.TrimSpace(line)
		default:
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			last = strings.ToLower(strings.TrimSpace(k))
			cur[last] = strings.TrimSpace(v)
		}
	}
	flush()
	return out
}

// Mirror is the Debian archive the host's apt uses, reused for the other
// suites so that images come from the same place as the host's packages.
type Mirror struct {
	URI      string
	SignedBy string
}

// HostMirror picks, among the host's source entries, the archive serving
// the host's release: a "deb" entry with a plain codename suite
// ("bookworm", not "bookworm-security" or "bookworm-updates") and the main
// component.
func HostMirror(entries []SourceEntry) (Mirror, error) {
	for _, e := range entries {
		if !slices.Contains(e.Types, "deb") || !slices.Contains(e.Components, "main") {
			continue
		}
		for _, s := range e.Suites {
			if s != "" && !strings.ContainsAny(s, "-/") {
				return Mirror{URI: strings.TrimRight(e.URIs[0], "/"), SignedBy: e.SignedBy}, nil
			}
		}
	}
	return Mirror{}, fmt.Errorf("no Debian release archive (a deb entry with a codename suite and main) among %d apt sources", len(entries))
}

// ReadHostSources reads the host's apt sources under etcApt (/etc/apt):
// sources.list and sources.list.d/*.list (one-line) and *.sources (deb822).
func ReadHostSources(etcApt string) ([]SourceEntry, error) {
	var out []SourceEntry
	read := func(name string, parse func(string) []SourceEntry) error {
		b, err := os.ReadFile(name)
		if os.IsNotExist(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read apt sources: %w", err)
		}
		out = append(out, parse(string(b))...)
		return nil
	}
	if err := read(filepath.Join(etcApt, "sources.list"), ParseOneLineSources); err != nil {
		return nil, err
	}
	for _, pat := range []struct {
		glob  string
		parse func(string) []SourceEntry
	}{{"*.list", ParseOneLineSources}, {"*.sources", ParseDeb822Sources}} {
		names, err := filepath.Glob(filepath.Join(etcApt, "sources.list.d", pat.glob))
		if err != nil {
			return nil, err
		}
		sort := slices.Clone(names)
		slices.Sort(sort)
		for _, n := range sort {
			if err := read(n, pat.parse); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// PrivateSourcesList is the one-line sources list of a private apt
// configuration: suite's main component from the host's mirror.
func PrivateSourcesList(m Mirror, suite string) string {
	opts := ""
	if m.SignedBy != "" {
		opts = "[signed-by=" + m.SignedBy + "] "
	}
	return fmt.Sprintf("deb %s%s %s main\n", opts, m.URI, suite)
}

// AptConfig is the apt configuration file (apt-get -c) of a private
// workspace dir: its own sources list, package lists, cache and an empty
// dpkg status (so the host's installed packages never sway which version
// is picked), its own binary package cache, no hooks of the host's configuration (they would touch the
// host's caches), no translations or AppStream metadata. Everything else
// (proxies, timeouts) still comes from the host's apt.conf.d.
func AptConfig(dir string) string {
	var b strings.Builder
	for _, clear := range []string{
		"APT::Update::Pre-Invoke", "APT::Update::Post-Invoke", "APT::Update::Post-Invoke-Success",
		"DPkg::Pre-Invoke", "DPkg::Post-Invoke", "DPkg::Pre-Install-Pkgs",
		"Acquire::IndexTargets::deb::DEP-11", "Acquire::IndexTargets::deb::DEP-11-icons",
		"Acquire::IndexTargets::deb::DEP-11-icons-small", "Acquire::IndexTargets::deb::DEP-11-icons-large",
		"Acquire::IndexTargets::deb::DEP-11-icons-hidpi", "Acquire::IndexTargets::deb::CNF",
	} {
		fmt.Fprintf(&b, "#clear %s;\n", clear)
	}
	fmt.Fprintf(&b, "Acquire::Languages \"none\";\n")
	fmt.Fprintf(&b, "Dir::Etc::sourcelist %q;\n", filepath.Join(dir, "sources.list"))
	fmt.Fprintf(&b, "Dir::Etc::sourceparts \"-\";\n")
	fmt.Fprintf(&b, "Dir::State::Lists %q;\n", filepath.Join(dir, "lists"))
	fmt.Fprintf(&b, "Dir::State::status %q;\n", filepath.Join(dir, "status"))
	fmt.Fprintf(&b, "Dir::Cache %q;\n", filepath.Join(dir, "cache"))
	// Keep the binary package cache (some hosts turn it off): each
	// apt-cache call then takes milliseconds instead of parsing the lists.
	fmt.Fprintf(&b, "Dir::Cache::pkgcache \"pkgcache.bin\";\n")
	fmt.Fprintf(&b, "Dir::Cache::srcpkgcache \"\";\n")
	return b.String()
}

// Stanza is one package version as apt-cache show prints it.
type Stanza struct {
	Package, Version, Architecture, Section string
	Depends                                 []string // names, first alternative, Pre-Depends included
	SHA256                                  string
}

// IsLibrary reports whether the package is a shared library package
// (section libs, in any archive area).
func (s Stanza) IsLibrary() bool { return s.Section == "libs" || strings.HasSuffix(s.Section, "/libs") }

// ParseStanzas reads apt-cache show's output.
func ParseStanzas(out string) []Stanza {
	var res []Stanza
	for _, p := range paragraphs(out, false) {
		if p["package"] == "" || p["version"] == "" {
			continue
		}
		s := Stanza{Package: p["package"], Version: p["version"], Architecture: p["architecture"], Section: p["section"], SHA256: p["sha256"]}
		s.Depends = append(ParseDepends(p["pre-depends"]), ParseDepends(p["depends"])...)
		res = append(res, s)
	}
	return res
}

// ParseDepends reads a Depends field: the name of each dependency's first
// alternative, without version constraint or architecture qualifier.
func ParseDepends(field string) []string {
	var out []string
	for _, dep := range strings.Split(field, ",") {
		alt, _, _ := strings.Cut(dep, "|")
		name := strings.Fields(strings.NewReplacer("(", " (", "[", " [", "<", " <").Replace(alt))
		if len(name) == 0 {
			continue
		}
		n, _, _ := strings.Cut(name[0], ":")
		out = append(out, n)
	}
	return out
}

// UpstreamMatches reports whether the Debian version debVersion packages
// upstream version want: "5:8.0.2-3+deb13u3" and "8.1.1+dfsg1-3" match
// "8.0.2" and "8.1.1"; "8.0.20-1" does not match "8.0.2".
func UpstreamMatches(debVersion, want string) bool {
	v := debVersion
	if _, rest, ok := strings.Cut(v, ":"); ok {
		v = rest
	}
	if i := strings.LastIndex(v, "-"); i >= 0 {
		v = v[:i]
	}
	if !strings.HasPrefix(v, want) {
		return false
	}
	rest := v[len(want):]
	return rest == "" || rest[0] == '+' || rest[0] == '~'
}

// DebFileName is the name apt-get download gives a package file: the
// epoch's colon is escaped ("redis-tools_5%3a8.0.2-3_amd64.deb").
func DebFileName(pkg, version, arch string) string {
	return fmt.Sprintf("%s_%s_%s.deb", pkg, strings.ReplaceAll(version, ":", "%3a"), arch)
}

// Resolve picks the package versions to download for src: each of
// src.Packages at a version packaging src.Version, and, when
// src.OwnLibraries, the library packages (section libs) they depend on,
// recursively. Where a name has several versions, the first listed wins:
// apt-cache show lists them newest first. show answers
// apt-cache show for a set of names; a name it does not know (a purely
// virtual package) is left out: the loader check of the image reports a
// library that is really missing. The result is sorted by name.
func Resolve(src DebianSource, show func(names []string) ([]Stanza, error)) ([]Stanza, error) {
	stanzas, err := show(src.Packages)
	if err != nil {
		return nil, err
	}
	picked := map[string]Stanza{}
	for _, name := range src.Packages {
		var found []string
		var best *Stanza
		for i, s := range stanzas {
			if s.Package != name {
				continue
			}
			found = append(found, s.Version)
			if UpstreamMatches(s.Version, src.Version) && best == nil {
				best = &stanzas[i]
			}
		}
		switch {
		case len(found) == 0:
			return nil, fmt.Errorf("%s: no package %s", src.Suite, name)
		case best == nil:
			return nil, fmt.Errorf("%s: %s %s is not available (the suite has %s)", src.Suite, name, src.Version, strings.Join(found, ", "))
		}
		picked[name] = *best
	}
	if src.OwnLibraries {
		asked := map[string]bool{}
		var queue []string
		enqueue := func(s Stanza) {
			for _, d := range s.Depends {
				if !asked[d] {
					asked[d] = true
					queue = append(queue, d)
				}
			}
		}
		for _, name := range src.Packages {
			asked[name] = true
		}
		for _, name := range src.Packages {
			enqueue(picked[name])
		}
		for len(queue) > 0 {
			slices.Sort(queue)
			batch := queue
			queue = nil
			got, err := show(batch)
			if err != nil {
				return nil, err
			}
			first := map[string]Stanza{}
			for _, s := range got {
				if _, ok := first[s.Package]; !ok {
					first[s.Package] = s
				}
			}
			for _, name := range batch {
				if s, ok := first[name]; ok && s.IsLibrary() {
					picked[name] = s
					enqueue(s)
				}
			}
		}
	}
	out := make([]Stanza, 0, len(picked))
	for _, s := range picked {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Stanza) int { return strings.Compare(a.Package, b.Package) })
	return out, nil
}
