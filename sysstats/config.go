package sysstats

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/shirou/gopsutil/v3/common"
)

// Config says where the kernel's files are. Every path sysstats reads is
// under one of these roots, so tests and containerised agents can point
// them elsewhere (node_exporter's --path.procfs and friends).
type Config struct {
	// ProcRoot is procfs, "/proc" by default (or /host/proc in a container).
	ProcRoot string `json:"proc_root"`
	// SysRoot is sysfs, "/sys" by default.
	SysRoot string `json:"sys_root"`
	// CgroupRoot is where cgroups are mounted, "/sys/fs/cgroup" by default.
	// With cgroup v2 it is the unified mount itself; with v1 it holds one
	// directory per controller (memory/, cpuacct/, ...).
	CgroupRoot string `json:"cgroup_root"`
}

// DefaultConfig returns the roots of an ordinary Linux host.
func DefaultConfig() Config {
	return Config{ProcRoot: "/proc", SysRoot: "/sys", CgroupRoot: "/sys/fs/cgroup"}
}

// withDefaults fills empty roots from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.ProcRoot == "" {
		c.ProcRoot = d.ProcRoot
	}
	if c.SysRoot == "" {
		c.SysRoot = d.SysRoot
	}
	if c.CgroupRoot == "" {
		c.CgroupRoot = d.CgroupRoot
	}
	return c
}

// Validate reports roots that are set but not absolute. Empty roots are
// valid: they take their default.
func (c Config) Validate() error {
	var errs []error
	for _, r := range []struct{ name, path string }{
		{"proc_root", c.ProcRoot}, {"sys_root", c.SysRoot}, {"cgroup_root", c.CgroupRoot},
	} {
		if r.path != "" && !filepath.IsAbs(r.path) {
			errs = append(errs, fmt.Errorf("sysstats: %s %q is not an absolute path", r.name, r.path))
		}
	}
	return errors.Join(errs...)
}

// Context returns parent carrying a gopsutil common.EnvMap that points
// gopsutil's /proc and /sys reads at the configured roots.
func (c Config) Context(parent context.Context) context.Context {
	c = c.withDefaults()
	return context.WithValue(parent, common.EnvKey, common.EnvMap{
		common.HostProcEnvKey: c.ProcRoot,
		common.HostSysEnvKey:  c.SysRoot,
	})
}
