package main

import (
	"fmt"
	"regexp"
	"strings"
)

var (
	describeRE  = regexp.MustCompile(`^v?([0-9][0-9A-Za-z.]*)(?:-([0-9]+)-g([0-9a-f]+))?$`)
	hashRE      = regexp.MustCompile(`^[0-9a-f]{7,40}$`)
	debUpstream = regexp.MustCompile(`^[0-9][A-Za-z0-9.+~]*$`)
)

// DebVersion turns `git describe --tags --always --dirty` into a Debian
// version that sorts as the commits do (dpkg --compare-versions):
//
//	v1.2.3             -> 1.2.3
//	v1.2.3-4-gabc1234  -> 1.2.3+4.gabc1234   (after 1.2.3, before 1.2.4)
//	abc1234 (no tag)   -> 0.0.0+<count>.gabc1234, count = commits in HEAD
//	...-dirty          -> ....dirty, or +0.dirty after a bare tag
func DebVersion(describe string, count int) (string, error) {
	d := strings.TrimSpace(describe)
	dirty := strings.HasSuffix(d, "-dirty")
	d = strings.TrimSuffix(d, "-dirty")
	var v string
	switch m := describeRE.FindStringSubmatch(d); {
	case hashRE.MatchString(d):
		// No tag: describe printed the abbreviated hash alone (so a tag
		// must not look like one: v1, 1.0 and 1.2.3 do not).
		if count <= 0 {
			return "", fmt.Errorf("version from %q: no tag, and no commit count", describe)
		}
		v = fmt.Sprintf("0.0.0+%d.g%s", count, d)
	case m != nil:
		v = m[1]
		if m[2] != "" {
			v += "+" + m[2] + ".g" + m[3]
		}
	default:
		return "", fmt.Errorf("version from %q: want a tag like v1.2.3", describe)
	}
	if dirty {
		if strings.Contains(v, "+") {
			v += ".dirty"
		} else {
			v += "+0.dirty"
		}
	}
	if !debUpstream.MatchString(v) {
		return "", fmt.Errorf("version %q (from %q) is not a Debian upstream version", v, describe)
	}
	return v, nil
}
