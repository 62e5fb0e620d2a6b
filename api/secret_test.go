package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

const secretValue = "s3cr3t-VALUE-that-must-never-print_0123456789abcdefABCDEF-xyz"

// holder is how a secret usually travels: a field of a struct.
type holder struct {
	Name string
	Pw   Secret
	Ptr  *Secret
	List []Secret
}

func TestSecretNeverPrinted(t *testing.T) {
	s := NewSecret(secretValue)
	h := holder{Name: "n", Pw: s, Ptr: &s, List: []Secret{s, s}}
	addon := Addon{ID: "my-app-1", App: "my-app", Password: s, FleetPassword: s}
	as := Assignment{MemberID: "m1", AddonID: "my-app-1", Password: s, FleetPassword: s}
	job := BackupJob{ID: "j1", Kind: JobBackup, Password: s}
	cases := map[string]string{
		"%v":             fmt.Sprintf("%v", s),
		"%+v":            fmt.Sprintf("%+v", s),
		"%#v":            fmt.Sprintf("%#v", s),
		"%s":             fmt.Sprintf("%s", s),
		"%q":             fmt.Sprintf("%q", s),
		"%x":             fmt.Sprintf("%x", s),
		"%X":             fmt.Sprintf("%X", s),
		"%d":             fmt.Sprintf("%d", s),
		"%10.3s":         fmt.Sprintf("%10.3s", s),
		"pointer %v":     fmt.Sprintf("%v", &s),
		"struct %v":      fmt.Sprintf("%v", h),
		"struct %+v":     fmt.Sprintf("%+v", h),
		"struct %#v":     fmt.Sprintf("%#v", h),
		"addon %+v":      fmt.Sprintf("%+v", addon),
		"addon %#v":      fmt.Sprintf("%#v", addon),
		"assignment %+v": fmt.Sprintf("%+v", as),
		"job %+v":        fmt.Sprintf("%+v", job),
		"Sprint":         fmt.Sprint(s, h),
		"Sprintln":       fmt.Sprintln(s),
		"String":         s.String(),
		"GoString":       s.GoString(),
		"error %v":       fmt.Errorf("auth with %v failed", s).Error(),
		"error %s wrap":  fmt.Errorf("dial: %w", fmt.Errorf("auth %s: %w", s, errors.New("WRONGPASS"))).Error(),
		"error struct":   fmt.Errorf("job %+v: %w", job, errors.ErrUnsupported).Error(),
	}
	text, _ := s.MarshalText()
	cases["MarshalText"] = string(text)

	for _, handler := range []string{"text", "json"} {
		var buf bytes.Buffer
		var log *slog.Logger
		if handler == "text" {
			log = slog.New(slog.NewTextHandler(&buf, nil))
		} else {
			log = slog.New(slog.NewJSONHandler(&buf, nil))
		}
		log.Info("top", "pw", s, "pwptr", &s)
		log.Info("addon", "addon", addon, "assignment", as, "job", job)
		log.Info("attr", slog.Any("pw", s), slog.Group("g", "pw", s))
		log.With("pw", s).Error("err", "err", fmt.Errorf("x %v", s))
		if handler == "text" { // the JSON handler json-encodes plain structs: see Secret's doc
			log.Info("struct", "h", h)
		}
		cases["slog "+handler] = buf.String()
	}
	for name, out := range cases {
		if strings.Contains(out, secretValue) || strings.Contains(out, secretValue[:8]) {
			t.Errorf("%s prints the secret: %s", name, out)
		}
		if !strings.Contains(out, Redaction) && name != "addon %+v" && !strings.HasPrefix(name, "job") && !strings.HasPrefix(name, "error struct") {
			t.Errorf("%s: no %s in %q", name, Redaction, out)
		}
	}
}

func TestSecretJSONIsTheWire(t *testing.T) {
	in := Assignment{MemberID: "m1", Password: NewSecret(secretValue), FleetPassword: NewSecret("fleet")}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"password":"`+secretValue+`"`) || !strings.Contains(string(b), `"fleet_password":"fleet"`) {
		t.Fatalf("the wire lacks the secrets: %s", b)
	}
	var out Assignment
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if out.Password.Reveal() != secretValue || !out.Password.Equal(in.Password) || out.FleetPassword.Reveal() != "fleet" {
		t.Fatal("the secrets did not round-trip")
	}
	// A zero FleetPassword is left out (an addon not migrated yet).
	b, _ = json.Marshal(Addon{ID: "a"})
	if strings.Contains(string(b), "password") {
		t.Fatalf("zero secrets are omitted: %s", b)
	}
	var s Secret
	err = json.Unmarshal([]byte(`{"not":"`+secretValue+`"}`), &s)
	if err == nil || strings.Contains(err.Error(), secretValue) {
		t.Fatalf("a non-string is refused without repeating it: %v", err)
	}
	if !NewSecret("").IsZero() || NewSecret("x").IsZero() || NewSecret("a").Equal(NewSecret("b")) {
		t.Fatal("IsZero/Equal")
	}
}

func TestRedactedDropsSecrets(t *testing.T) {
	a := Addon{ID: "a", Password: NewSecret("p"), FleetPassword: NewSecret("f")}
	r := a.Redacted()
	if !r.Password.IsZero() || !r.FleetPassword.IsZero() {
		t.Fatal("Redacted keeps a secret")
	}
	b, _ := json.Marshal(r)
	if strings.Contains(string(b), "password") {
		t.Fatalf("a redacted addon's JSON names a password: %s", b)
	}
}
