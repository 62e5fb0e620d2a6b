package packaging

import "github.com/cacheplane/cacheplane/api"

// libgcc_s is dlopen'ed by glibc for pthread_cancel and unwinding, which
// ldd does not always list.
const libgccS = "/lib/x86_64-linux-gnu/libgcc_s.so.1"

// DefaultImages are the images of api's engine catalog (api.DefaultEngines):
// Redis 7.0.15, its sentinel and HAProxy 2.6 from the host's own bookworm
// packages; Valkey 8.0.1 from bookworm-backports' packages on the host's
// libraries; Valkey 8.1.1 and Redis 8.0.2 from trixie's packages with
// trixie's own loader and libraries (they need a newer glibc than
// bookworm's). Each Valkey and Redis 8 image serves both the redis and the
// sentinel role: the agent runs valkey-server --sentinel or redis-sentinel
// (a link to the one binary). Adding an engine version is an entry here and
// one in api.DefaultEngines (a test checks they agree).
func DefaultImages() []Image {
	return []Image{
		{Name: "redis-7.0", Ref: api.ImageRedis7, Version: "7.0.15",
			Binaries: []string{"/usr/bin/redis-server", "/usr/bin/redis-cli"},
			Optional: []string{"/usr/bin/redis-check-aof", libgccS}},
		{Name: "redis-sentinel-7.0", Ref: api.ImageSentinel7, Version: "7.0.15",
			Binaries: []string{"/usr/bin/redis-sentinel", "/usr/bin/redis-cli"},
			Optional: []string{libgccS}},
		{Name: "haproxy-2.6", Ref: api.ImageHAProxy,
			Binaries: []string{"/usr/sbin/haproxy"},
			Optional: []string{libgccS}},
		{Name: "valkey-8.0.1", Ref: api.ImageValkey8, Version: "8.0.1",
			Binaries: []string{"/usr/bin/valkey-server", "/usr/bin/valkey-sentinel", "/usr/bin/valkey-cli"},
			Optional: []string{"/usr/bin/valkey-check-aof", libgccS},
			Debian: &DebianSource{Suite: "bookworm-backports", Version: "8.0.1",
				Packages: []string{"valkey-server", "valkey-sentinel", "valkey-tools"}}},
		{Name: "valkey-8.1.1", Ref: api.ImageValkey81, Version: "8.1.1",
			Binaries: []string{"/usr/bin/valkey-server", "/usr/bin/valkey-sentinel", "/usr/bin/valkey-cli"},
			Optional: []string{"/usr/bin/valkey-check-aof", libgccS},
			Debian: &DebianSource{Suite: "trixie", Version: "8.1.1", OwnLibraries: true,
				Packages: []string{"valkey-server", "valkey-sentinel", "valkey-tools"}}},
		{Name: "redis-8.0.2", Ref: api.ImageRedis8, Version: "8.0.2",
			Binaries: []string{"/usr/bin/redis-server", "/usr/bin/redis-sentinel", "/usr/bin/redis-cli"},
			Optional: []string{"/usr/bin/redis-check-aof", libgccS},
			Debian: &DebianSource{Suite: "trixie", Version: "8.0.2", OwnLibraries: true,
				Packages: []string{"redis-server", "redis-sentinel", "redis-tools"}}},
	}
}

// OptionalImage reports whether an image may be skipped when its files are
// not there: images from Debian packages of other suites, when no Debian
// cache dir is given (tests that need only the host's images).
func OptionalImage(img Image) bool { return img.Debian != nil }
