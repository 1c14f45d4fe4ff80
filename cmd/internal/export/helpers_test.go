package export

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/signature"

	ehrcrypto "github.com/ehrport/ehrport/crypto"
	"github.com/ehrport/ehrport/storage"
)

// testKeys are in-memory keysets: a KEK, and a signing key with its verifier.
type testKeys struct {
	rec    ehrcrypto.Recipient
	id     ehrcrypto.Identity
	signer *ehrcrypto.Signer
	verif  *ehrcrypto.Verifier
}

func newTestKeys(t testing.TB) *testKeys {
	t.Helper()
	kek, err := keyset.NewHandle(aead.AES256GCMKeyTemplate())
	if err != nil {
		t.Fatal(err)
	}
	rec, err := ehrcrypto.NewKeysetRecipient(kek)
	if err != nil {
		t.Fatal(err)
	}
	id, err := ehrcrypto.NewKeysetIdentity(kek)
	if err != nil {
		t.Fatal(err)
	}
	sh, err := keyset.NewHandle(signature.ED25519KeyTemplate())
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ehrcrypto.NewSigner(sh)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := sh.Public()
	if err != nil {
		t.Fatal(err)
	}
	v, err := ehrcrypto.NewVerifier(pub)
	if err != nil {
		t.Fatal(err)
	}
	return &testKeys{rec: rec, id: id, signer: signer, verif: v}
}

func (k *testKeys) exportOpts(st storage.Store, paths ...string) *Options {
	return &Options{Paths: paths, Store: st, Recipients: []ehrcrypto.Recipient{k.rec}, Signer: k.signer}
}

func (k *testKeys) restore(t testing.TB, st storage.Store) (*RestoreSummary, string, error) {
	t.Helper()
	dir := t.TempDir()
	s, err := (&RestoreOptions{Store: st, To: dir, Identities: []ehrcrypto.Identity{k.id}, Verifier: k.verif}).Run(context.Background())
	return s, dir, err
}

func localStore(t testing.TB) *storage.LocalStore {
	t.Helper()
	st, err := storage.NewLocalStore(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// repoRoot finds the module root from this package's folder.
func repoRoot(t testing.TB) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

// corpus returns ../shared/corpus/SUB beside the repo, skipping when it is
// absent unless CI=true.
func corpus(t testing.TB, sub string) string {
	t.Helper()
	p := filepath.Join(repoRoot(t), "..", "shared", "corpus", sub)
	if _, err := os.Stat(p); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("corpus %s missing (CI=true): %v", p, err)
		}
		t.Skipf("corpus %s not present", p)
	}
	return p
}

// storeKeys lists every key in the store.
func storeKeys(t testing.TB, st storage.Store) []string {
	t.Helper()
	var ks []string
	for info, err := range st.List(context.Background(), "") {
		if err != nil {
			t.Fatal(err)
		}
		ks = append(ks, info.Key)
	}
	return ks
}

// restoredLines reads every restored data file of a type, in part order.
func restoredLines(t testing.TB, dir string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	files, _ := filepath.Glob(filepath.Join(dir, "*.ndjson"))
	sort.Strings(files)
	for _, f := range files {
		typ := strings.SplitN(filepath.Base(f), ".", 2)[0]
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > 0 && b[len(b)-1] != '\n' {
			t.Fatalf("%s does not end in a newline", f)
		}
		for _, l := range bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n")) {
			out[typ] = append(out[typ], string(l))
		}
	}
	return out
}

// cancelStore cancels the export's context when it sees Put number n.
type cancelStore struct {
	storage.Store
	n      int64
	puts   atomic.Int64
	cancel context.CancelFunc
}

func (c *cancelStore) Put(ctx context.Context, key string, r io.Reader, size int64, o storage.PutOptions) error {
	if c.puts.Add(1) == c.n {
		c.cancel()
		return ctx.Err()
	}
	return c.Store.Put(ctx, key, r, size, o)
}
