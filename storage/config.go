package storage

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// ErrBadConfig marks a configuration that cannot be used. The CLI maps it to
// exit code 2.
var ErrBadConfig = errors.New("bad store configuration")

// DefaultConfigFile is read from the working folder when --config is not given.
const DefaultConfigFile = "ehrport.toml"

// EnvPrefix starts the environment variables that name or complete a store:
// EHRPORT_STORE_<NAME>_<FIELD>, as documented in docs/config.md.
const EnvPrefix = "EHRPORT_STORE_"

// envFields are the per-store environment variables, in documentation order.
var envFields = []string{"TYPE", "ENDPOINT", "ACCESS_KEY", "SECRET_KEY", "SESSION_TOKEN", "REGION", "CA_CERT", "ALLOW_HTTP", "PATH_STYLE", "PART_SIZE", "IDLE_TIMEOUT", "PATH"}

// Secret holds a credential. It prints as [redacted] in every format and
// marshals as such, so a log line, an error or a --json report can never
// carry it by accident; only Reveal gives the value.
type Secret string

func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// GoString implements fmt.GoStringer so %#v redacts too.
func (s Secret) GoString() string { return s.String() }

// MarshalText implements encoding.TextMarshaler (JSON and TOML).
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Secret) UnmarshalText(b []byte) error { *s = Secret(b); return nil }

// Reveal returns the credential itself, for the one place that signs requests.
func (s Secret) Reveal() string { return string(s) }

// StoreConfig is one named store. Field names match the TOML keys and the
// environment suffixes; see docs/config.md.
type StoreConfig struct {
	Name string `toml:"-" json:"name"`
	// Type is "s3" or "local". An entry with an endpoint defaults to s3,
	// one with only a path to local.
	Type     string `toml:"type" json:"type"`
	Endpoint string `toml:"endpoint" json:"endpoint,omitempty"`
	Region   string `toml:"region" json:"region,omitempty"`
	// AccessKey and SecretKey, when both empty, come from the standard AWS
	// environment variables or shared credentials file. None of the three
	// credentials is ever serialized: `stores list` shows only a masked key
	// id, since listings get pasted into tickets and logs.
	AccessKey    string `toml:"access_key" json:"-"`
	SecretKey    Secret `toml:"secret_key" json:"-"`
	SessionToken Secret `toml:"session_token" json:"-"`
	// CACert is a PEM bundle trusted in addition to the system roots.
	CACert string `toml:"ca_cert" json:"ca_cert,omitempty"`
	// AllowHTTP permits an http:// endpoint. Off by default: health data
	// crosses the network only under TLS unless someone says otherwise.
	AllowHTTP bool `toml:"allow_http" json:"allow_http,omitempty"`
	// PathStyle is "auto" (default), "path" or "virtual".
	PathStyle string `toml:"path_style" json:"path_style,omitempty"`
	// PartSize is the multipart part size in bytes (default 16 MiB).
	PartSize int64 `toml:"part_size" json:"part_size,omitempty"`
	// IdleTimeout fails a connection on which nothing moved either way for
	// this long (default DefaultIdleTimeout), so a server or network that
	// stalls part-way through a transfer is retried instead of waited on
	// for ever.
	IdleTimeout Duration `toml:"idle_timeout" json:"idle_timeout,omitempty"`
	// Path is the folder of a local store.
	Path string `toml:"path" json:"path,omitempty"`

	// Source says where the entry came from, for `stores list`.
	Source string `toml:"-" json:"source"`
}

// Config is the set of named stores.
type Config struct {
	Stores map[string]*StoreConfig `toml:"stores"`
	// File is the config file read, or "" when none was.
	File string `toml:"-"`
}

// LoadConfig reads the config file (path, or DefaultConfigFile in the
// working folder if path is "" and that file exists) and then applies
// EHRPORT_STORE_* variables from environ, which override file values field
// by field. Store names are case-insensitive.
func LoadConfig(path string, environ []string) (*Config, error) {
	cfg := &Config{Stores: map[string]*StoreConfig{}}
	explicit := path != ""
	if !explicit {
		path = DefaultConfigFile
	}
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		cfg.File = path
		if err := cfg.parseFile(path, data); err != nil {
			return nil, err
		}
	case errors.Is(err, fs.ErrNotExist) && !explicit:
		// No config file: environment only.
	default:
		return nil, fmt.Errorf("%w: %v", ErrBadConfig, err)
	}
	if err := cfg.applyEnv(environ); err != nil {
		return nil, err
	}
	for _, sc := range cfg.Stores {
		if err := sc.normalise(); err != nil {
			return nil, err
		}
	}
	return cfg, nil
}

func (c *Config) parseFile(path string, data []byte) error {
	var raw struct {
		Stores map[string]*StoreConfig `toml:"stores"`
	}
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		var sme *toml.StrictMissingError
		if errors.As(err, &sme) && len(sme.Errors) > 0 {
			first := sme.Errors[0]
			row, _ := first.Position()
			return fmt.Errorf("%w: %s:%d: unknown key %q (see docs/config.md for the schema)", ErrBadConfig, path, row, strings.Join(first.Key(), "."))
		}
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return fmt.Errorf("%w: %s:%d:%d: %s", ErrBadConfig, path, row, col, de.Error())
		}
		return fmt.Errorf("%w: %s: %v", ErrBadConfig, path, err)
	}
	hasSecret := false
	for name, sc := range raw.Stores {
		if !storeNameRE().MatchString(name) {
			return fmt.Errorf("%w: %s: store name %q: use letters, digits, '-' and '_', starting with a letter", ErrBadConfig, path, name)
		}
		if sc == nil {
			sc = &StoreConfig{}
		}
		key := strings.ToUpper(name)
		if _, dup := c.Stores[key]; dup {
			return fmt.Errorf("%w: %s: store %q is defined twice (names are case-insensitive)", ErrBadConfig, path, name)
		}
		sc.Name = name
		sc.Source = path
		hasSecret = hasSecret || sc.SecretKey != "" || sc.SessionToken != ""
		c.Stores[key] = sc
	}
	if hasSecret {
		// Like ssh with its keys: a file holding secrets that others can
		// read is refused, not used.
		fi, err := os.Stat(path)
		if err == nil && fi.Mode().Perm()&0o077 != 0 {
			return fmt.Errorf("%w: %s holds secret keys but is readable by others (mode %o); run: chmod 600 %s", ErrBadConfig, path, fi.Mode().Perm(), path)
		}
	}
	return nil
}

func (c *Config) applyEnv(environ []string) error {
	// Longest field suffix first, so "_SECRET_KEY" is not read as a store
	// named "X_SECRET" with field "KEY".
	fields := slices.Clone(envFields)
	slices.SortFunc(fields, func(a, b string) int { return len(b) - len(a) })
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, EnvPrefix) {
			continue
		}
		rest := k[len(EnvPrefix):]
		var name, field string
		for _, f := range fields {
			if strings.HasSuffix(rest, "_"+f) {
				name, field = rest[:len(rest)-len(f)-1], f
				break
			}
		}
		if name == "" || !storeNameRE().MatchString(name) {
			continue // not ours, or malformed: ignore rather than guess
		}
		key := strings.ToUpper(name)
		sc := c.Stores[key]
		if sc == nil {
			sc = &StoreConfig{Name: name, Source: "environment"}
			c.Stores[key] = sc
		} else if sc.Source != "environment" && !strings.Contains(sc.Source, "+env") {
			sc.Source += " +env"
		}
		if err := sc.setField(field, v, k); err != nil {
			return err
		}
	}
	return nil
}

func (sc *StoreConfig) setField(field, v, envName string) error {
	switch field {
	case "TYPE":
		sc.Type = v
	case "ENDPOINT":
		sc.Endpoint = v
	case "ACCESS_KEY":
		sc.AccessKey = v
	case "SECRET_KEY":
		sc.SecretKey = Secret(v)
	case "SESSION_TOKEN":
		sc.SessionToken = Secret(v)
	case "REGION":
		sc.Region = v
	case "CA_CERT":
		sc.CACert = v
	case "ALLOW_HTTP":
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%w: %s=%q: use true or false", ErrBadConfig, envName, v)
		}
		sc.AllowHTTP = b
	case "PATH_STYLE":
		sc.PathStyle = v
	case "PART_SIZE":
		n, err := ParseSize(v)
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrBadConfig, envName, err)
		}
		sc.PartSize = n
	case "IDLE_TIMEOUT":
		if err := sc.IdleTimeout.UnmarshalText([]byte(v)); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrBadConfig, envName, err)
		}
	case "PATH":
		sc.Path = v
	}
	return nil
}

// DefaultIdleTimeout is as long as the wait for a response's headers: a
// silence longer than that is a stall, not a slow server.
const DefaultIdleTimeout = 5 * time.Minute

// Duration is a time.Duration written as text ("90s", "5m") in the config
// file and the environment.
type Duration time.Duration

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil || v <= 0 {
		return fmt.Errorf("duration %q: write a positive duration such as 90s or 5m", b)
	}
	*d = Duration(v)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// S3 multipart limits that every vendor shares.
const (
	MinPartSize     = 5 << 20
	MaxPartSize     = 5 << 30
	DefaultPartSize = 16 << 20
)

func (sc *StoreConfig) normalise() error {
	where := sc.Source
	if sc.Type == "" {
		switch {
		case sc.Endpoint != "":
			sc.Type = "s3"
		case sc.Path != "":
			sc.Type = "local"
		}
	}
	switch sc.Type {
	case "local":
		if sc.Path == "" {
			return fmt.Errorf("%w: store %q (%s): a local store needs a path", ErrBadConfig, sc.Name, where)
		}
		return nil
	case "s3":
	case "":
		return fmt.Errorf("%w: store %q (%s): no endpoint; set endpoint in the config or %s%s_ENDPOINT", ErrBadConfig, sc.Name, where, EnvPrefix, strings.ToUpper(sc.Name))
	default:
		return fmt.Errorf("%w: store %q (%s): type %q is not s3 or local", ErrBadConfig, sc.Name, where, sc.Type)
	}
	if sc.Endpoint == "" {
		return fmt.Errorf("%w: store %q (%s): no endpoint; set endpoint in the config or %s%s_ENDPOINT", ErrBadConfig, sc.Name, where, EnvPrefix, strings.ToUpper(sc.Name))
	}
	u, err := url.Parse(sc.Endpoint)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return fmt.Errorf("%w: store %q (%s): endpoint %q must look like https://host[:port]", ErrBadConfig, sc.Name, where, redactURL(sc.Endpoint))
	}
	if u.User != nil {
		return fmt.Errorf("%w: store %q (%s): the endpoint must not carry credentials; use access_key and secret_key", ErrBadConfig, sc.Name, where)
	}
	if u.Path != "" && u.Path != "/" {
		return fmt.Errorf("%w: store %q (%s): endpoint %q has a path; give only scheme, host and port", ErrBadConfig, sc.Name, where, sc.Endpoint)
	}
	if u.Scheme == "http" && !sc.AllowHTTP {
		return fmt.Errorf("%w: store %q (%s): endpoint %s is plain http, which would send health data and credentials unencrypted; use https, or set allow_http = true (%s%s_ALLOW_HTTP=true) for a test server", ErrBadConfig, sc.Name, where, sc.Endpoint, EnvPrefix, strings.ToUpper(sc.Name))
	}
	if (sc.AccessKey == "") != (sc.SecretKey == "") {
		return fmt.Errorf("%w: store %q (%s): give both access key and secret key, or neither (to use the AWS environment or shared credentials file)", ErrBadConfig, sc.Name, where)
	}
	switch sc.PathStyle {
	case "", "auto", "path", "virtual":
	default:
		return fmt.Errorf("%w: store %q (%s): path_style %q is not auto, path or virtual", ErrBadConfig, sc.Name, where, sc.PathStyle)
	}
	if sc.PartSize == 0 {
		sc.PartSize = DefaultPartSize
	}
	if sc.PartSize < MinPartSize || sc.PartSize > MaxPartSize {
		return fmt.Errorf("%w: store %q (%s): part size %d is outside S3's limits (5 MiB to 5 GiB)", ErrBadConfig, sc.Name, where, sc.PartSize)
	}
	if sc.IdleTimeout == 0 {
		sc.IdleTimeout = Duration(DefaultIdleTimeout)
	}
	if sc.CACert != "" {
		if _, err := os.Stat(sc.CACert); err != nil {
			return fmt.Errorf("%w: store %q (%s): CA bundle: %v", ErrBadConfig, sc.Name, where, err)
		}
	}
	return nil
}

// Lookup returns the named store (case-insensitive).
func (c *Config) Lookup(name string) (*StoreConfig, error) {
	if sc, ok := c.Stores[strings.ToUpper(name)]; ok {
		return sc, nil
	}
	where := "no config file"
	if c.File != "" {
		where = c.File
	}
	return nil, fmt.Errorf("%w: no store named %q (%s); define [stores.%s] in %s or set %s%s_ENDPOINT", ErrBadConfig, name, where, name, DefaultConfigFile, EnvPrefix, strings.ToUpper(name))
}

// Names returns the store names, sorted.
func (c *Config) Names() []string {
	var names []string
	for _, sc := range c.Stores {
		names = append(names, sc.Name)
	}
	slices.Sort(names)
	return names
}

// ParseSize reads a byte size such as 16MiB, 64M, 5GiB or 1048576.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q: write a whole number of bytes, optionally with KiB, MiB or GiB", s)
	}
	return n * mult, nil
}

// redactURL drops any user info from a URL for messages.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		if err != nil {
			return "(unparseable URL)"
		}
		return s
	}
	u.User = nil
	return u.String()
}

// FormatSize writes a byte count for people: 1.5 GiB, 12.0 MiB, 3.2 KiB,
// 512 B (the units ParseSize reads).
func FormatSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
