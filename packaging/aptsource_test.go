package packaging

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/cacheplane/cacheplane/api"
)

// hostDeb822 is this machine's /etc/apt/sources.list.d/debian.sources, as
// Debian's bookworm images ship it.
const hostDeb822 = `Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# http://snapshot.debian.org/archive/debian-security/20250520T000000Z
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
`

func TestParseSourcesAndHostMirror(t *testing.T) {
	cases := []struct {
		name    string
		entries []SourceEntry
		want    Mirror
		wantErr bool
	}{
		{"deb822 of bookworm images", ParseDeb822Sources(hostDeb822),
			Mirror{URI: "http://deb.debian.org/debian", SignedBy: "/usr/share/keyrings/debian-archive-keyring.gpg"}, false},
		{"deb822, security first, disabled entry, trailing slash", ParseDeb822Sources(`Types: deb
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main

Enabled: no
Types: deb
URIs: http://disabled.example/debian
Suites: bookworm
Components: main

Types: deb deb-src
URIs: http://mirror.example/debian/ http://other.example/debian
Suites: bookworm
Components: main contrib
`), Mirror{URI: "http://mirror.example/debian"}, false},
		{"deb822 with an inline key", ParseDeb822Sources(`Types: deb
URIs: http://mirror.example/debian
Suites: bookworm
Components: main
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 abc
 -----END PGP PUBLIC KEY BLOCK-----
`), Mirror{URI: "http://mirror.example/debian"}, false},
		{"one-line", ParseOneLineSources(`# comment
deb-src http://src.example/debian bookworm main
deb http://security.debian.org/debian-security bookworm-security main
deb [ arch=amd64 signed-by=/etc/apt/keyrings/debian.gpg ] http://ftp.fr.debian.org/debian/ bookworm main non-free-firmware # trailing
`), Mirror{URI: "http://ftp.fr.debian.org/debian", SignedBy: "/etc/apt/keyrings/debian.gpg"}, false},
		{"one-line without options", ParseOneLineSources("deb http://mirror.example/debian bookworm main\n"),
			Mirror{URI: "http://mirror.example/debian"}, false},
		{"only security and updates", ParseOneLineSources("deb http://m/debian bookworm-updates main\ndeb http://s/debian-security bookworm-security main\n"), Mirror{}, true},
		{"no main component", ParseOneLineSources("deb http://m/debian bookworm contrib\n"), Mirror{}, true},
		{"a flat repository", ParseOneLineSources("deb http://m/repo ./\n"), Mirror{}, true},
		{"nothing", nil, Mirror{}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := HostMirror(c.entries)
			if (err != nil) != c.wantErr || got != c.want {
				t.Fatalf("HostMirror = %+v, %v; want %+v (error %v)", got, err, c.want, c.wantErr)
			}
		})
	}
}

func TestReadHostSources(t *testing.T) {
	etc := t.TempDir()
	if err := os.MkdirAll(filepath.Join(etc, "sources.list.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"sources.list.d/debian.sources":                   hostDeb822,
		"sources.list.d/extra.list":                       "deb http://extra.example/debian bookworm main\n",
		"sources.list.d/nodesource.sources.disabled-by-x": "Types: deb\nURIs: http://ignored\nSuites: nodistro\nComponents: main\n",
		"sources.list.d/google-cloud-sdk.list.disabled-x": "deb http://ignored cloud-sdk main\n",
		"sources.list": "# empty but for this comment\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(etc, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := ReadHostSources(etc)
	if err != nil {
		t.Fatal(err)
	}
	var uris []string
	for _, e := range entries {
		uris = append(uris, e.URIs...)
	}
	want := []string{"http://extra.example/debian", "http://deb.debian.org/debian", "http://deb.debian.org/debian-security"}
	if !slices.Equal(uris, want) {
		t.Fatalf("URIs %v, want %v (.list before .sources, disabled files ignored)", uris, want)
	}
	if _, err := ReadHostSources(filepath.Join(etc, "missing")); err != nil {
		t.Fatalf("a missing dir has no sources, not an error: %v", err)
	}
}

func TestPrivateSourcesAndConfig(t *testing.T) {
	m := Mirror{URI: "http://deb.debian.org/debian", SignedBy: "/usr/share/keyrings/debian-archive-keyring.gpg"}
	if got, want := PrivateSourcesList(m, "trixie"), "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main\n"; got != want {
		t.Errorf("PrivateSourcesList = %q, want %q", got, want)
	}
	if got, want := PrivateSourcesList(Mirror{URI: "http://m/debian"}, "bookworm-backports"), "deb http://m/debian bookworm-backports main\n"; got != want {
		t.Errorf("PrivateSourcesList = %q, want %q", got, want)
	}
	conf := AptConfig("/cache/apt/trixie")
	for _, want := range []string{
		`Dir::Etc::sourcelist "/cache/apt/trixie/sources.list";`,
		`Dir::Etc::sourceparts "-";`,
		`Dir::State::Lists "/cache/apt/trixie/lists";`,
		`Dir::State::status "/cache/apt/trixie/status";`,
		`Dir::Cache "/cache/apt/trixie/cache";`,
		`#clear APT::Update::Post-Invoke-Success;`,
		`#clear DPkg::Post-Invoke;`,
		`#clear Acquire::IndexTargets::deb::DEP-11;`,
		`Acquire::Languages "none";`,
	} {
		if !strings.Contains(conf, want+"\n") {
			t.Errorf("apt.conf lacks %q:\n%s", want, conf)
		}
	}
	// Nothing in it points at the host's own state.
	for _, host := range []string{"/etc/apt", "/var/lib/apt", "/var/cache/apt", "/var/lib/dpkg"} {
		if strings.Contains(conf, host) {
			t.Errorf("apt.conf names %s:\n%s", host, conf)
		}
	}
}

func TestParseStanzasAndDepends(t *testing.T) {
	out := `Package: redis-tools
Version: 5:8.0.2-3+deb13u3
Architecture: amd64
Section: database
Depends: adduser, libatomic1 (>= 4.8), libc6 (>= 2.38), libjemalloc2 (>= 3.5.0), liblzf1 (>= 1.5), libssl3t64 (>= 3.0.0), libstdc++6 (>= 13.1), libsystemd0
Description: Persistent key-value database
 with network interface (client)
SHA256: abc

Package: libc6
Version: 2.41-12+deb13u5
Architecture: amd64
Section: libs
Depends: libgcc-s1
SHA256: def

Package: valkey-sentinel
Version: 8.1.1+dfsg1-3+deb13u3
Architecture: amd64
Section: database
Pre-Depends: init-system-helpers (>= 1.54~)
Depends: valkey-tools (= 8.1.1+dfsg1-3+deb13u3), python3:any | python3-minimal [amd64], default-mta|mail-transport-agent
`
	got := ParseStanzas(out)
	want := []Stanza{
		{Package: "redis-tools", Version: "5:8.0.2-3+deb13u3", Architecture: "amd64", Section: "database", SHA256: "abc",
			Depends: []string{"adduser", "libatomic1", "libc6", "libjemalloc2", "liblzf1", "libssl3t64", "libstdc++6", "libsystemd0"}},
		{Package: "libc6", Version: "2.41-12+deb13u5", Architecture: "amd64", Section: "libs", SHA256: "def", Depends: []string{"libgcc-s1"}},
		{Package: "valkey-sentinel", Version: "8.1.1+dfsg1-3+deb13u3", Architecture: "amd64", Section: "database",
			Depends: []string{"init-system-helpers", "valkey-tools", "python3", "default-mta"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ParseStanzas:\n got %+v\nwant %+v", got, want)
	}
	if !got[1].IsLibrary() || got[0].IsLibrary() || !(Stanza{Section: "non-free/libs"}).IsLibrary() {
		t.Error("IsLibrary: section libs in any area")
	}
}

func TestUpstreamMatchesAndFileName(t *testing.T) {
	for _, c := range []struct {
		deb, want string
		ok        bool
	}{
		{"5:8.0.2-3+deb13u3", "8.0.2", true},
		{"8.1.1+dfsg1-3+deb13u3", "8.1.1", true},
		{"8.0.1+dfsg1-1~bpo12+1", "8.0.1", true},
		{"5:7.0.15-1~deb12u10", "7.0.15", true},
		{"8.0.1~rc1-1", "8.0.1", true},
		{"8.0.20-1", "8.0.2", false},
		{"8.1.1-1", "8.0.1", false},
		{"8.0.2", "8.0.2", true}, // native package, no revision
		{"1:8.0.2-1-2", "8.0.2", false},
	} {
		if got := UpstreamMatches(c.deb, c.want); got != c.ok {
			t.Errorf("UpstreamMatches(%q, %q) = %v, want %v", c.deb, c.want, got, c.ok)
		}
	}
	if got := DebFileName("redis-tools", "5:8.0.2-3+deb13u3", "amd64"); got != "redis-tools_5%3a8.0.2-3+deb13u3_amd64.deb" {
		t.Errorf("DebFileName = %s", got)
	}
	if got := DebFileName("gcc-14-base", "14.2.0-19", "amd64"); got != "gcc-14-base_14.2.0-19_amd64.deb" {
		t.Errorf("DebFileName = %s", got)
	}
}

// suite is a little Debian suite for Resolve: name → versions, newest
// first, as apt-cache show lists them.
type suite map[string][]Stanza

func (s suite) show(calls *[][]string) func([]string) ([]Stanza, error) {
	return func(names []string) ([]Stanza, error) {
		*calls = append(*calls, slices.Clone(names))
		var out []Stanza
		for _, n := range names {
			out = append(out, s[n]...)
		}
		return out, nil
	}
}

func TestResolve(t *testing.T) {
	lib := func(name, version string, deps ...string) Stanza {
		return Stanza{Package: name, Version: version, Section: "libs", Depends: deps}
	}
	trixie := suite{
		"valkey-server": {{Package: "valkey-server", Version: "8.1.2-1", Depends: []string{"valkey-tools"}},
			{Package: "valkey-server", Version: "8.1.1+dfsg1-3+deb13u3", Depends: []string{"valkey-tools"}}},
		"valkey-tools": {{Package: "valkey-tools", Version: "8.1.1+dfsg1-3+deb13u3", Section: "database",
			Depends: []string{"adduser", "libc6", "libssl3t64", "libsystemd0"}}},
		"adduser":                 {{Package: "adduser", Version: "3.152", Section: "admin", Depends: []string{"passwd"}}},
		"libc6":                   {lib("libc6", "2.41-12", "libgcc-s1")},
		"libgcc-s1":               {lib("libgcc-s1", "14.2.0-19", "gcc-14-base", "libc6")},
		"gcc-14-base":             {lib("gcc-14-base", "14.2.0-19")},
		"libssl3t64":              {lib("libssl3t64", "3.5.9-1", "libc6", "zlib1g", "openssl-provider-legacy")},
		"zlib1g":                  {lib("zlib1g", "1:1.3.1-1", "libc6")},
		"openssl-provider-legacy": {{Package: "openssl-provider-legacy", Version: "3.5.9-1", Section: "utils"}},
		"libsystemd0":             {lib("libsystemd0", "257.13-1", "libc6", "libcap2")},
		"libcap2":                 {lib("libcap2", "1:2.75-10", "libc6")},
		// passwd and libcap2's own deps are never asked: adduser is no library.
	}
	src := DebianSource{Suite: "trixie", Version: "8.1.1", OwnLibraries: true, Packages: []string{"valkey-server", "valkey-tools"}}
	var calls [][]string
	got, err := Resolve(src, trixie.show(&calls))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range got {
		names = append(names, s.Package+"="+s.Version)
	}
	want := []string{"gcc-14-base=14.2.0-19", "libc6=2.41-12", "libcap2=1:2.75-10", "libgcc-s1=14.2.0-19", "libssl3t64=3.5.9-1",
		"libsystemd0=257.13-1", "valkey-server=8.1.1+dfsg1-3+deb13u3", "valkey-tools=8.1.1+dfsg1-3+deb13u3", "zlib1g=1:1.3.1-1"}
	if !slices.Equal(names, want) {
		t.Fatalf("Resolve:\n got %v\nwant %v", names, want)
	}
	for _, c := range calls {
		if slices.Contains(c, "passwd") {
			t.Errorf("asked about passwd, a dependency of a non-library: %v", calls)
		}
	}

	// Without own libraries: the named packages only.
	src.OwnLibraries = false
	calls = nil
	got, err = Resolve(src, trixie.show(&calls))
	if err != nil || len(got) != 2 || len(calls) != 1 {
		t.Fatalf("host libraries: %+v, %v, %d calls", got, err, len(calls))
	}

	// A version the suite does not carry, a package it does not have.
	_, err = Resolve(DebianSource{Suite: "trixie", Version: "8.0.1", Packages: []string{"valkey-server"}}, trixie.show(&calls))
	if err == nil || !strings.Contains(err.Error(), "valkey-server 8.0.1 is not available (the suite has 8.1.2-1, 8.1.1+dfsg1-3+deb13u3)") {
		t.Errorf("missing version: %v", err)
	}
	_, err = Resolve(DebianSource{Suite: "trixie", Version: "8.1.1", Packages: []string{"keydb-server"}}, trixie.show(&calls))
	if err == nil || !strings.Contains(err.Error(), "trixie: no package keydb-server") {
		t.Errorf("missing package: %v", err)
	}
	boom := errors.New("apt-cache: boom")
	if _, err := Resolve(src, func([]string) ([]Stanza, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Errorf("show's error: %v", err)
	}
}

// TestCatalogImagesAgree: every image api's engine catalog names is built
// here, for the version the catalog says, and every engine image is in
// the catalog.
func TestCatalogImagesAgree(t *testing.T) {
	byRef := map[string]Image{}
	for _, img := range DefaultImages() {
		if _, dup := byRef[img.Ref]; dup {
			t.Errorf("%s built twice", img.Ref)
		}
		byRef[img.Ref] = img
	}
	used := map[string]bool{}
	for _, ev := range api.DefaultEngines() {
		for role, ref := range ev.Images {
			img, ok := byRef[ref]
			if !ok {
				t.Errorf("%s %s: image %s is not built by DefaultImages", ev.Key(), role, ref)
				continue
			}
			used[ref] = true
			if role != api.RoleHAProxy && img.Version != ev.Version {
				t.Errorf("%s %s: image %s checks version %q", ev.Key(), role, ref, img.Version)
			}
			if img.Debian != nil && img.Debian.Version != ev.Version {
				t.Errorf("%s: image %s downloads version %q", ev.Key(), ref, img.Debian.Version)
			}
			bin := "/usr/bin/redis-server"
			switch {
			case role == api.RoleHAProxy:
				bin = "/usr/sbin/haproxy"
			case ev.Engine == api.EngineValkey:
				bin = "/usr/bin/valkey-server" // the agent runs valkey-server --sentinel for sentinels
			case role == api.RoleSentinel:
				bin = "/usr/bin/redis-sentinel"
			}
			if !slices.Contains(img.Binaries, bin) {
				t.Errorf("%s %s: image %s lacks %s, which the agent runs", ev.Key(), role, ref, bin)
			}
		}
	}
	for ref := range byRef {
		if !used[ref] {
			t.Errorf("image %s is in no catalog entry", ref)
		}
	}
}
