// Package testserver starts private, real S3 servers for fault tests: MinIO
// or versitygw, each on its own free port on 127.0.0.1, with its own data
// folder, keys and a throw-away CA, over TLS like the shared test bed. A
// test owns its servers, so it may kill them with SIGKILL and restart them
// on the same port with the same data: the shared test bed
// (scripts/testbed.sh) is never touched.
//
// The binaries are the pinned ones that scripts/install-servers.sh builds
// into .cache/bin (make test installs them); EHRPORT_SERVER_BIN names
// another folder.
package testserver

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Kind names a server implementation.
type Kind string

// The two servers of the test bed: cloud A and cloud B.
const (
	MinIO     Kind = "minio"
	Versitygw Kind = "versitygw"
)

// Region is the region every private server is configured with.
const Region = "us-east-1"

// readyTimeout bounds a start: MinIO takes seconds on a busy 2-core machine.
const readyTimeout = 90 * time.Second

// Server is one private S3 server process. Its methods are not safe for
// concurrent use, except Committed.
type Server struct {
	Kind Kind
	// Port serves the S3 API over TLS on 127.0.0.1; it stays the same
	// across restarts.
	Port int
	// CAFile is the PEM of the CA that signed the server's certificate.
	CAFile string
	// AccessKey and SecretKey are the root credentials.
	AccessKey, SecretKey string

	tb          testing.TB
	dir         string // certificates, log, data
	data        string // the objects
	consolePort int    // MinIO's console, unused but required
	cmd         *exec.Cmd
	exited      chan struct{}
	logPath     string
	starts      int
}

// Start starts a server of kind on a free port, waits until it answers and
// stops it (SIGKILL) when the test ends. It fails the test when the binary
// is missing or the server does not come up.
func Start(tb testing.TB, kind Kind) *Server {
	tb.Helper()
	bin := Binary(tb, kind)
	dir := tb.TempDir()
	s := &Server{Kind: kind, tb: tb, dir: dir, data: filepath.Join(dir, "data"), logPath: filepath.Join(dir, "server.log"),
		AccessKey: "ak" + randomHex(8), SecretKey: "sk" + randomHex(16)}
	if err := s.writeTLS(); err != nil {
		tb.Fatalf("testserver: certificates: %v", err)
	}
	tb.Cleanup(s.stop)
	var err error
	// A port found free can be taken before the server binds it.
	for range 3 {
		ports, perr := FreePorts(2)
		if perr != nil {
			tb.Fatalf("testserver: %v", perr)
		}
		s.Port, s.consolePort = ports[0], ports[1]
		if err = s.launch(bin); err != nil {
			tb.Fatalf("testserver: start %s: %v", kind, err)
		}
		if err = s.waitReady(); err == nil {
			return s
		}
		s.stop()
		if !errors.Is(err, errPortTaken) {
			break
		}
	}
	tb.Fatalf("testserver: %s did not start: %v\n%s", kind, err, s.logTail())
	return nil
}

// Endpoint is the server's https URL.
func (s *Server) Endpoint() string { return "https://127.0.0.1:" + strconv.Itoa(s.Port) }

// Env returns the EHRPORT_STORE_<NAME>_* variables that name this server as
// the store name (docs/config.md).
func (s *Server) Env(name string) []string {
	p := "EHRPORT_STORE_" + strings.ToUpper(name) + "_"
	return []string{
		p + "ENDPOINT=" + s.Endpoint(),
		p + "ACCESS_KEY=" + s.AccessKey,
		p + "SECRET_KEY=" + s.SecretKey,
		p + "REGION=" + Region,
		p + "CA_CERT=" + s.CAFile,
	}
}

// EnvAt is Env for a server reached at another address (a fault proxy in
// front of it): same credentials and CA, another endpoint.
func (s *Server) EnvAt(name, hostPort string) []string {
	env := s.Env(name)
	env[0] = "EHRPORT_STORE_" + strings.ToUpper(name) + "_ENDPOINT=https://" + hostPort
	return env
}

// Kill ends the server with SIGKILL (no chance to flush or clean up) and
// waits until it is gone.
func (s *Server) Kill() {
	s.tb.Helper()
	if s.cmd == nil {
		return
	}
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		s.tb.Fatalf("testserver: kill %s: %v", s.Kind, err)
	}
	<-s.exited
	s.cmd = nil
}

// Restart starts the server again on the same port with the same data and
// keys, after a Kill, and waits until it answers.
func (s *Server) Restart() {
	s.tb.Helper()
	if s.cmd != nil {
		s.Kill()
	}
	bin := Binary(s.tb, s.Kind)
	var err error
	// The port was ours a moment ago; a client socket cannot hold it
	// (FreePorts picks below the ephemeral range), so a bind failure is
	// transient at worst.
	for range 5 {
		if err = s.launch(bin); err != nil {
			s.tb.Fatalf("testserver: restart %s: %v", s.Kind, err)
		}
		if err = s.waitReady(); err == nil {
			return
		}
		s.stop()
		if !errors.Is(err, errPortTaken) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	s.tb.Fatalf("testserver: %s did not restart on port %d: %v\n%s", s.Kind, s.Port, err, s.logTail())
}

// DataDir is the folder where the server keeps its objects: for versitygw
// one plain file per object at bucket/key (metadata in xattrs), for MinIO
// its own format. Tests tamper with objects at rest there.
func (s *Server) DataDir() string { return s.data }

// Running reports whether the server process is up (it may not answer yet).
func (s *Server) Running() bool { return s.cmd != nil }

// Committed counts the objects of bucket under prefix (a folder: "" or
// "run1/") whose key ends with suffix that the server has committed to its
// data folder: what a client could read now. It reads the folder, not the
// API, so it works while the server is busy or down, and costs the test's
// process, not the server's. Uploads in progress (temporary and multipart
// files) are not counted.
func (s *Server) Committed(bucket, prefix, suffix string) int {
	root := filepath.Join(s.data, bucket, filepath.FromSlash(prefix))
	n := 0
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // a file renamed away while walking
		}
		name := d.Name()
		if d.IsDir() && p != root && strings.HasPrefix(name, ".") {
			return filepath.SkipDir // versitygw's .sgwtmp, MinIO's .minio.sys
		}
		switch s.Kind {
		case MinIO:
			// An object is a folder named like its key holding xl.meta.
			if !d.IsDir() && name == "xl.meta" && strings.HasSuffix(filepath.Dir(p), suffix) {
				n++
			}
		case Versitygw:
			if d.Type().IsRegular() && strings.HasSuffix(name, suffix) {
				n++
			}
		}
		return nil
	})
	return n
}

var errPortTaken = errors.New("port already in use")

func (s *Server) launch(bin string) error {
	if err := os.MkdirAll(s.data, 0o700); err != nil {
		return err
	}
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	s.starts++
	fmt.Fprintf(logf, "==== start %d\n", s.starts)
	var cmd *exec.Cmd
	env := baseEnv()
	switch s.Kind {
	case MinIO:
		cmd = exec.Command(bin, "server",
			"--address", "127.0.0.1:"+strconv.Itoa(s.Port),
			"--console-address", "127.0.0.1:"+strconv.Itoa(s.consolePort),
			"--certs-dir", filepath.Join(s.dir, "minio-certs"), "--quiet", "--anonymous", s.data)
		env = append(env, "MINIO_ROOT_USER="+s.AccessKey, "MINIO_ROOT_PASSWORD="+s.SecretKey,
			"MINIO_UPDATE=off", "MINIO_SITE_REGION="+Region, "MINIO_CI_CD=on")
	case Versitygw:
		ver := filepath.Join(s.dir, "versions")
		if err := os.MkdirAll(ver, 0o700); err != nil {
			logf.Close()
			return err
		}
		// --keep-alive: without it every response closes the connection.
		cmd = exec.Command(bin, "--port", "127.0.0.1:"+strconv.Itoa(s.Port),
			"--cert", filepath.Join(s.dir, "server.pem"), "--key", filepath.Join(s.dir, "server.key"),
			"--region", Region, "--keep-alive", "--quiet",
			"posix", "--versioning-dir", ver, s.data)
		env = append(env, "ROOT_ACCESS_KEY="+s.AccessKey, "ROOT_SECRET_KEY="+s.SecretKey)
	default:
		logf.Close()
		return fmt.Errorf("unknown server kind %q", s.Kind)
	}
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, and killed if the test process dies first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(exited)
	}()
	s.cmd, s.exited = cmd, exited
	return nil
}

// baseEnv is the environment of a server: enough to run, and none of the
// credentials variables a server might prefer over the ones given.
func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "PATH" || k == "HOME" || k == "TMPDIR" || k == "LANG":
			env = append(env, kv)
		}
	}
	return env
}

// waitReady polls until an anonymous request is answered 403 over TLS
// with our CA: the S3 API is serving.
func (s *Server) waitReady() error {
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(s.CAFile)
	if err != nil {
		return err
	}
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, DisableKeepAlives: true}}
	deadline := time.Now().Add(readyTimeout)
	for time.Now().Before(deadline) {
		resp, err := client.Get(s.Endpoint() + "/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusForbidden {
				return nil
			}
		}
		select {
		case <-s.exited:
			s.cmd = nil
			if strings.Contains(s.lastStart(), "already in use") {
				return errPortTaken
			}
			return errors.New("the server exited during start-up")
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("no answer on %s within %s", s.Endpoint(), readyTimeout)
}

func (s *Server) stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
	s.cmd = nil
}

func (s *Server) lastStart() string {
	b, _ := os.ReadFile(s.logPath)
	text := string(b)
	if i := strings.LastIndex(text, "==== start"); i >= 0 {
		return text[i:]
	}
	return text
}

// logTail is the end of the server's log since its last start, for a
// failure message. It holds no secret: keys travel in the environment.
func (s *Server) logTail() string {
	lines := strings.Split(strings.TrimSpace(s.lastStart()), "\n")
	if len(lines) > 25 {
		lines = lines[len(lines)-25:]
	}
	return strings.Join(lines, "\n")
}

// Binary returns the path of a pinned server binary, failing the test when
// it is missing.
func Binary(tb testing.TB, kind Kind) string {
	tb.Helper()
	dir := os.Getenv("EHRPORT_SERVER_BIN")
	if dir == "" {
		root, err := repoRoot()
		if err != nil {
			tb.Fatalf("testserver: %v", err)
		}
		dir = filepath.Join(root, ".cache", "bin")
	}
	p := filepath.Join(dir, string(kind))
	if _, err := os.Stat(p); err != nil {
		tb.Fatalf("testserver: no %s binary at %s: run `bash scripts/install-servers.sh` (make test does)", kind, p)
	}
	return p
}

var (
	rootOnce sync.Once
	root     string
	rootErr  error
)

// repoRoot is the folder of the module's go.mod, found from the working
// folder (a test runs in its package's folder).
func repoRoot() (string, error) {
	rootOnce.Do(func() {
		dir, err := os.Getwd()
		if err != nil {
			rootErr = err
			return
		}
		for {
			if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/ehrport/ehrport\n") {
				root = dir
				return
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				rootErr = errors.New("not inside the ehrport module: cannot find .cache/bin")
				return
			}
			dir = parent
		}
	})
	return root, rootErr
}

// FreePorts returns n distinct TCP ports on 127.0.0.1 that nothing listens
// on. They are drawn below the kernel's ephemeral range, so a client
// socket's local port can never hold a server's port while it restarts.
func FreePorts(n int) ([]int, error) {
	lo, hi := 20000, 32767
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil && v > 1025 {
				hi = v - 1
			}
		}
	}
	if hi <= lo+1000 {
		lo = 10000
	}
	var got []int
	for tries := 0; len(got) < n; tries++ {
		if tries > 1000 {
			return nil, fmt.Errorf("no free TCP port found in %d-%d", lo, hi)
		}
		var b [4]byte
		rand.Read(b[:])
		p := lo + int(uint32(b[0])<<24|uint32(b[1])<<16|uint32(b[2])<<8|uint32(b[3]))%(hi-lo+1)
		dup := false
		for _, q := range got {
			dup = dup || q == p
		}
		if dup {
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		ln.Close()
		got = append(got, p)
	}
	return got, nil
}

// writeTLS writes a throw-away CA and a certificate for 127.0.0.1 and
// localhost signed by it (ECDSA P-256), in the layouts both servers want.
func (s *Server) writeTLS() error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "ehrport fault-test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(7 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(7 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	s.CAFile = filepath.Join(s.dir, "ca.pem")
	files := map[string][]byte{
		"ca.pem": caPEM, "server.pem": certPEM, "server.key": keyPEM,
		"minio-certs/public.crt": certPEM, "minio-certs/private.key": keyPEM, "minio-certs/CAs/ca.pem": caPEM,
	}
	for name, b := range files {
		p := filepath.Join(s.dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(p, b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	return n
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// WaitFor polls cond every few milliseconds until it holds or ctx ends,
// and reports whether it held.
func WaitFor(ctx context.Context, every time.Duration, cond func() bool) bool {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if cond() {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}
