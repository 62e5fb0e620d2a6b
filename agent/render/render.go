package render

import (
	"fmt"
	"net"
	"path"
	"regexp"
	"strconv"
	"strings"

	"github.com/cacheplane/cacheplane/api"
)

// Endpoint is an IP address and a port. The zero Endpoint means "none".
type Endpoint struct {
	Addr string
	Port int
}

// IsZero reports whether e is the zero Endpoint.
func (e Endpoint) IsZero() bool { return e.Addr == "" && e.Port == 0 }

// String is host:port, with brackets for IPv6.
func (e Endpoint) String() string { return net.JoinHostPort(e.Addr, strconv.Itoa(e.Port)) }

// nameRe is what a master name, member name or addon id may look like in any
// of the three files: no spaces, quotes or characters a parser treats
// specially.
var nameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// invalidf is an input error; it wraps api.ErrInvalid. Callers never pass the
// password to it.
func invalidf(file, format string, args ...any) error {
	return fmt.Errorf("render %s: %w: %s", file, api.ErrInvalid, fmt.Sprintf(format, args...))
}

func checkIP(file, what, s string) error {
	if s == "" {
		return invalidf(file, "%s is missing", what)
	}
	ip := net.ParseIP(s)
	if ip == nil {
		return invalidf(file, "%s %q is not an IP address", what, s)
	}
	if ip.IsUnspecified() {
		return invalidf(file, "%s %q is unspecified: give the host's own address", what, s)
	}
	return nil
}

func checkPort(file, what string, p int) error {
	if p < 1 || p > 65535 {
		return invalidf(file, "%s %d is out of range 1-65535", what, p)
	}
	return nil
}

func checkEndpoint(file, what string, e Endpoint) error {
	if err := checkIP(file, what+" address", e.Addr); err != nil {
		return err
	}
	return checkPort(file, what+" port", e.Port)
}

// checkPath accepts absolute, clean paths that need no quoting in any of the
// three formats.
func checkPath(file, what, p string) error {
	if p == "" {
		return invalidf(file, "%s is missing", what)
	}
	if !strings.HasPrefix(p, "/") || path.Clean(p) != p {
		return invalidf(file, "%s %q must be an absolute, clean path", what, p)
	}
	for _, r := range p {
		if r <= ' ' || r == 0x7f || strings.ContainsRune(`"'\$#`, r) {
			return invalidf(file, "%s %q contains a space, quote or special character", what, p)
		}
	}
	return nil
}

// checkPassword accepts printable ASCII without spaces, quotes, backslashes,
// '$' and '#', so the password needs no escaping in redis.conf (an ACL ">"
// rule), sentinel.conf or haproxy.cfg (a double-quoted tcp-check string, where
// '$' would expand an environment variable). cacheplane's passwords are 64
// URL-safe characters. The error never repeats the password.
func checkPassword(file, pw string) error {
	if pw == "" {
		return invalidf(file, "password is missing")
	}
	if len(pw) > 512 {
		return invalidf(file, "password is longer than 512 characters")
	}
	for i := 0; i < len(pw); i++ {
		c := pw[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"'\$#`, c) >= 0 {
			return invalidf(file, "password contains a character outside printable ASCII or one of space \" ' \\ $ # (at byte %d)", i)
		}
	}
	return nil
}

func checkName(file, what, s string) error {
	if !nameRe.MatchString(s) {
		return invalidf(file, "%s %q must be 1-128 letters, digits, '_', '.' or '-', starting with a letter or digit", what, s)
	}
	return nil
}

// conf accumulates the lines of a file.
type conf struct{ b strings.Builder }

// line writes one directive made of space-separated words.
func (c *conf) line(words ...string) {
	c.b.WriteString(strings.Join(words, " "))
	c.b.WriteByte('\n')
}

// indented writes one directive indented by four spaces (haproxy sections).
func (c *conf) indented(words ...string) {
	c.b.WriteString("    ")
	c.line(words...)
}

// comment writes "# text" lines (prefix "# " or, indented, "    # ").
func (c *conf) comment(indent bool, lines ...string) {
	for _, l := range lines {
		if indent {
			c.b.WriteString("    ")
		}
		if l == "" {
			c.b.WriteString("#\n")
			continue
		}
		c.b.WriteString("# " + l + "\n")
	}
}

func (c *conf) blank() { c.b.WriteByte('\n') }

func (c *conf) String() string { return c.b.String() }

func itoa(i int) string { return strconv.Itoa(i) }
