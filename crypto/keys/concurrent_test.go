package keys_test

import (
	"bytes"
	"io"
	"path/filepath"
	"sync"
	"testing"

	ehrcrypto "github.com/ehrport/ehrport/crypto"
	"github.com/ehrport/ehrport/crypto/keys"
)

// Identities of a directory are used by many goroutines at once (a rewrap
// or verify opens objects concurrently): the lazy unlock must be safe and
// run once. Run with -race.
func TestIdentitiesConcurrent(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	d, err := keys.Init(dir, pass("p"), keys.InitOptions{Argon2: testArgon})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := d.Recipients()
	if err != nil {
		t.Fatal(err)
	}
	var objs [][]byte
	for i := range 8 {
		var buf bytes.Buffer
		w, err := ehrcrypto.NewEncryptWriter(&buf, rs, bind)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte{byte(i)})
		w.Close()
		objs = append(objs, buf.Bytes())
	}
	// A freshly opened directory: nothing unlocked yet.
	fresh, err := keys.Open(dir, pass("p"))
	if err != nil {
		t.Fatal(err)
	}
	ids := fresh.Identities()
	var wg sync.WaitGroup
	for i, o := range objs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := ehrcrypto.NewDecryptReader(bytes.NewReader(o), ids, bind)
			if err != nil {
				t.Error(err)
				return
			}
			b, err := io.ReadAll(r)
			if err != nil || len(b) != 1 || b[0] != byte(i) {
				t.Errorf("object %d: %v %v", i, b, err)
			}
		}()
	}
	wg.Wait()
}
