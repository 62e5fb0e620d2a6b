package api

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestPasswordRotateRequestValidate(t *testing.T) {
	tests := []struct {
		req  PasswordRotateRequest
		want string // "" = valid
	}{
		{PasswordRotateRequest{App: "my-app"}, ""},
		{PasswordRotateRequest{App: "my-app", Grace: Duration(time.Hour)}, ""},
		{PasswordRotateRequest{App: "my-app", Finish: true}, ""},
		{PasswordRotateRequest{App: ""}, "app"},
		{PasswordRotateRequest{App: "my-app", Grace: Duration(-time.Second)}, "negative"},
		{PasswordRotateRequest{App: "my-app", Grace: Duration(31 * 24 * time.Hour)}, "longer than"},
		{PasswordRotateRequest{App: "my-app", Grace: Duration(time.Hour), Finish: true}, "do not go together"},
	}
	for _, tc := range tests {
		err := tc.req.Validate()
		if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: %v, want %q", tc.req, err, tc.want)
		}
	}
}

// TestRotationSecretsRedacted: a rotation's passwords leave the addon's
// views like its password does.
func TestRotationSecretsRedacted(t *testing.T) {
	a := Addon{ID: "a-1", Password: NewSecret("cur-pw"), NextPassword: NewSecret("next-pw"), OldPassword: NewSecret("old-pw"), SpecPassword: NewSecret("spec-pw")}
	b, err := json.Marshal(a.Redacted())
	if err != nil {
		t.Fatal(err)
	}
	for _, pw := range []string{"cur-pw", "next-pw", "old-pw", "spec-pw"} {
		if strings.Contains(string(b), pw) {
			t.Errorf("the redacted addon holds %s", pw)
		}
	}
	// The Raft log and snapshots keep them (JSON is the wire).
	full, _ := json.Marshal(a)
	var back Addon
	if err := json.Unmarshal(full, &back); err != nil || !back.NextPassword.Equal(a.NextPassword) || !back.OldPassword.Equal(a.OldPassword) ||
		!back.SpecPassword.Equal(a.SpecPassword) {
		t.Fatalf("round trip: %v", err)
	}
}
