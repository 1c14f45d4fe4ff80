package storage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigEnvOnly(t *testing.T) {
	cfg, err := LoadConfig(os.DevNull, []string{
		"EHRPORT_STORE_CLOUDA_ENDPOINT=https://127.0.0.1:9000",
		"EHRPORT_STORE_CLOUDA_ACCESS_KEY=ak",
		"EHRPORT_STORE_CLOUDA_SECRET_KEY=sk",
		"EHRPORT_STORE_CLOUDA_REGION=eu-west-1",
		"EHRPORT_STORE_CLOUDA_PART_SIZE=32MiB",
		"EHRPORT_STORE_MY_STORE_SECRET_KEY=s2",
		"EHRPORT_STORE_MY_STORE_ACCESS_KEY=a2",
		"EHRPORT_STORE_MY_STORE_ENDPOINT=https://x.example",
		"EHRPORT_STORE_ARCHIVE_PATH=/srv/a",
		"UNRELATED=1",
	})
	if err != nil {
		t.Fatal(err)
	}
	a, err := cfg.Lookup("clouda")
	if err != nil {
		t.Fatal(err)
	}
	if a.Type != "s3" || a.Region != "eu-west-1" || a.SecretKey.Reveal() != "sk" || a.PartSize != 32<<20 {
		t.Errorf("clouda = %+v", a)
	}
	// Names with underscores: the longest field suffix wins.
	m, err := cfg.Lookup("my_store")
	if err != nil || m.AccessKey != "a2" || m.SecretKey.Reveal() != "s2" {
		t.Errorf("my_store = %+v, %v", m, err)
	}
	if ar, _ := cfg.Lookup("archive"); ar == nil || ar.Type != "local" {
		t.Errorf("archive = %+v", ar)
	}
}

func TestConfigFileAndEnvOverride(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "c.toml")
	os.WriteFile(p, []byte("[stores.old]\nendpoint = \"https://old.example\"\nregion = \"r1\"\n"), 0o644)
	cfg, err := LoadConfig(p, []string{"EHRPORT_STORE_OLD_REGION=r2"})
	if err != nil {
		t.Fatal(err)
	}
	o, _ := cfg.Lookup("OLD")
	if o.Region != "r2" || o.Endpoint != "https://old.example" || !strings.Contains(o.Source, "+env") {
		t.Errorf("old = %+v", o)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		env []string
		err string
	}{
		{[]string{"EHRPORT_STORE_X_ENDPOINT=ftp://x"}, "must look like https://"},
		{[]string{"EHRPORT_STORE_X_ENDPOINT=https://u:p@x"}, "must not carry credentials"},
		{[]string{"EHRPORT_STORE_X_ENDPOINT=https://x/path"}, "has a path"},
		{[]string{"EHRPORT_STORE_X_ENDPOINT=http://x"}, "plain http"},
		{[]string{"EHRPORT_STORE_X_ENDPOINT=https://x", "EHRPORT_STORE_X_ALLOW_HTTP=maybe"}, "true or false"},
		{[]string{"EHRPORT_STORE_X_ENDPOINT=https://x", "EHRPORT_STORE_X_PART_SIZE=1MiB"}, "outside S3's limits"},
		{[]string{"EHRPORT_STORE_X_ENDPOINT=https://x", "EHRPORT_STORE_X_PART_SIZE=lots"}, "whole number"},
		{[]string{"EHRPORT_STORE_X_ENDPOINT=https://x", "EHRPORT_STORE_X_PATH_STYLE=sideways"}, "path_style"},
		{[]string{"EHRPORT_STORE_X_ENDPOINT=https://x", "EHRPORT_STORE_X_TYPE=ftp"}, "not s3 or local"},
		{[]string{"EHRPORT_STORE_X_ENDPOINT=https://x", "EHRPORT_STORE_X_CA_CERT=/nonexistent.pem"}, "CA bundle"},
		{[]string{"EHRPORT_STORE_X_REGION=r"}, "no endpoint"},
	} {
		_, err := LoadConfig(os.DevNull, tc.env)
		if !errors.Is(err, ErrBadConfig) || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%v: %v, want ErrBadConfig containing %q", tc.env, err, tc.err)
		}
	}
}

func TestSecretNeverPrints(t *testing.T) {
	s := Secret("hunter2")
	sc := StoreConfig{SecretKey: s}
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s", sc, sc, sc, s)} {
		if strings.Contains(out, "hunter2") {
			t.Fatalf("secret printed: %s", out)
		}
	}
	if s.Reveal() != "hunter2" {
		t.Fatal("Reveal lost the value")
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"16MiB": 16 << 20, "64M": 64 << 20, "5 GiB": 5 << 30, "1048576": 1 << 20, "2K": 2048} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "-1", "1.5M", "1TiB", "99999999999GiB"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
}

// FuzzLoadConfig: any file content either loads or fails with ErrBadConfig;
// never a panic, and never a secret in the error text.
func FuzzLoadConfig(f *testing.F) {
	f.Add("[stores.a]\nendpoint = \"https://x\"\naccess_key = \"k\"\nsecret_key = \"SECRETVALUE\"\n")
	f.Add("[stores.b]\npath = \"/tmp\"\n")
	f.Add("[stores.\"bad name\"]\n")
	f.Add("stores = 3")
	f.Fuzz(func(t *testing.T, content string) {
		p := filepath.Join(t.TempDir(), "c.toml")
		os.WriteFile(p, []byte(content), 0o600)
		_, err := LoadConfig(p, nil)
		if err != nil && !errors.Is(err, ErrBadConfig) {
			t.Fatalf("error not ErrBadConfig: %v", err)
		}
		if err != nil && strings.Contains(content, "SECRETVALUE") && strings.Contains(err.Error(), "SECRETVALUE") {
			t.Fatalf("secret in error: %v", err)
		}
	})
}
