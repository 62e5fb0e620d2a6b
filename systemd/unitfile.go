package systemd

import (
	"bufio"
	"embed"
	"fmt"
	"strings"
)

//go:embed *.service
var files embed.FS

// Units names the unit files this package holds.
var Units = []string{"cacheplane-coordinator.service", "cacheplane-agent.service"}

// File returns the text of one of Units.
func File(name string) ([]byte, error) { return files.ReadFile(name) }

// Unit is a parsed unit file: section -> key -> values in file order (a key
// may repeat, as SystemCallFilter= does).
type Unit map[string]map[string][]string

// Parse reads a unit file: [Section] headers, Key=Value lines, comments
// starting with # or ;, and lines continued with a trailing backslash.
func Parse(text string) (Unit, error) {
	u := Unit{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	n, cont := 0, ""
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if cont != "" {
			line = cont + " " + line
			cont = ""
		}
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if strings.HasSuffix(line, `\`) {
			cont = strings.TrimSuffix(line, `\`)
			continue
		}
		if line[0] == '[' {
			if !strings.HasSuffix(line, "]") {
				return nil, fmt.Errorf("line %d: bad section header %q", n, line)
			}
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section == "" {
			return nil, fmt.Errorf("line %d: not Key=Value in a section: %q", n, line)
		}
		k = strings.TrimSpace(k)
		u[section][k] = append(u[section][k], strings.TrimSpace(v))
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return u, nil
}

// Get returns the last value of section.key ("" when unset), as systemd
// reads a key set twice.
func (u Unit) Get(section, key string) string {
	vs := u[section][key]
	if len(vs) == 0 {
		return ""
	}
	return vs[len(vs)-1]
}

// ExecStart returns the service's command line as argv. Unit files allow
// quoting; ours need none, so a quote is an error here rather than a
// silently wrong split.
func (u Unit) ExecStart() ([]string, error) {
	vs := u["Service"]["ExecStart"]
	if len(vs) != 1 {
		return nil, fmt.Errorf("want one ExecStart=, have %d", len(vs))
	}
	v := vs[0]
	if strings.ContainsAny(v, `"'\$%`) {
		return nil, fmt.Errorf("ExecStart=%s: quoting, variables and specifiers are not read here", v)
	}
	argv := strings.Fields(strings.TrimLeft(v, "-@:+!"))
	if len(argv) == 0 {
		return nil, fmt.Errorf("empty ExecStart=")
	}
	return argv, nil
}
