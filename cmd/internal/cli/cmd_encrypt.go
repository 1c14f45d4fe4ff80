package cli

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	ehrcrypto "github.com/ehrport/ehrport/crypto"
	"github.com/ehrport/ehrport/crypto/keys"
	"github.com/ehrport/ehrport/crypto/kms"
)

func bindingFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "binding", Usage: "the object's logical `PATH` inside its export (bound into the ciphertext)"},
		&cli.StringFlag{Name: "export-id", Usage: "the export `ID` the object belongs to (bound into the ciphertext; default empty)"},
	}
}

func bindingFrom(c *cli.Context) (ehrcrypto.Binding, error) {
	b := ehrcrypto.Binding{ExportID: c.String("export-id"), Path: c.String("binding")}
	if b.Path == "" {
		return b, usagef("--binding PATH is required: the object's logical path inside the export, e.g. exports/x/Patient.000.ndjson")
	}
	return b, nil
}

func encryptCommand() *cli.Command {
	return &cli.Command{
		Name:  "encrypt",
		Usage: "encrypt a file for the hospital's keys or public recipients",
		UsageText: `ehrport encrypt (--keys DIR | --recipient PUB.json|KMS-URI ...) [--escrow PUB.json ...] --binding PATH [--export-id ID] IN OUT

Examples:
   ehrport encrypt --keys ./hospital-keys --binding exports/x/Patient.000.ndjson Patient.000.ndjson Patient.000.ndjson.ehr
   ehrport encrypt --recipient hospital.pub.json --escrow auditor.pub.json --binding exports/x/Patient.000.ndjson in.ndjson out.ehr`,
		Description: `A fresh random key (DEK) encrypts the file in 1 MiB segments (Tink
AES256_GCM_HKDF_1MB); the DEK is wrapped once per recipient: the KEK of
--keys DIR, each --recipient (an HPKE public keyset such as hpke.pub.json, or
a KMS key URI) and each --escrow. --recipient needs no secret at all. IN may
be - for stdin. OUT appears only when complete. Format: docs/format-v1.md.`,
		Flags: append([]cli.Flag{
			keysDirFlag("wrap for the primary KEK of the key directory `DIR`"),
			&cli.StringSliceFlag{Name: "recipient", Usage: "wrap for the public keyset `PUB.json`, or a KMS key URI (repeatable)"},
			&cli.StringSliceFlag{Name: "escrow", Usage: "also wrap for the escrow/auditor public keyset `PUB.json` (repeatable)"},
		}, bindingFlags()...),
		Action: func(c *cli.Context) error {
			g, err := globalsFrom(c)
			if err != nil {
				return err
			}
			if c.NArg() != 2 {
				return usagef("encrypt needs IN and OUT")
			}
			b, err := bindingFrom(c)
			if err != nil {
				return err
			}
			return (&encryptOptions{globals: g, Keys: c.String("keys"), Recipients: c.StringSlice("recipient"),
				Escrow: c.StringSlice("escrow"), Binding: b, In: c.Args().Get(0), Out: c.Args().Get(1)}).Run(c.Context)
		},
	}
}

type encryptOptions struct {
	*globals
	Keys       string
	Recipients []string
	Escrow     []string
	Binding    ehrcrypto.Binding
	In, Out    string
}

// recipientsFrom builds recipients from a key directory, public keyset
// files or KMS URIs, and escrow files.
func recipientsFrom(ctx context.Context, dir string, pubs, escrow []string, envs ...string) ([]ehrcrypto.Recipient, error) {
	var rs []ehrcrypto.Recipient
	if dir != "" {
		d, err := openKeys(ctx, dir, envs...)
		if err != nil {
			return nil, err
		}
		r, err := d.Recipients()
		if err != nil {
			return nil, err
		}
		rs = append(rs, r...)
	}
	for _, p := range pubs {
		if strings.Contains(p, "://") {
			a, err := kms.AEAD(ctx, p)
			if err != nil {
				return nil, err
			}
			rs = append(rs, ehrcrypto.NewKMSRecipient(p, a))
			continue
		}
		r, err := keys.LoadRecipient(p)
		if err != nil {
			return nil, err
		}
		rs = append(rs, r)
	}
	for _, p := range escrow {
		r, err := keys.LoadRecipient(p)
		if err != nil {
			return nil, err
		}
		rs = append(rs, ehrcrypto.Escrow(r))
	}
	return rs, nil
}

// openIn opens IN, or takes standard input for "-": as the *os.File it is,
// so that a file redirected into it is read at offsets like a named one
// (ehrcrypto.EncryptFile). Standard input is not closed.
func openIn(name string) (in *os.File, closeIn func(), err error) {
	if name == "-" {
		return os.Stdin, func() {}, nil
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, nil, err
	}
	return f, func() { f.Close() }, nil
}

func (o *encryptOptions) Run(ctx context.Context) error {
	if o.Keys == "" && len(o.Recipients) == 0 {
		return usagef("give --keys DIR or at least one --recipient PUB.json")
	}
	rs, err := recipientsFrom(ctx, o.Keys, o.Recipients, o.Escrow)
	if err != nil {
		return err
	}
	in, closeIn, err := openIn(o.In)
	if err != nil {
		return err
	}
	defer closeIn()
	h, err := ehrcrypto.EncryptFile(o.Out, in, rs, o.Binding)
	if err != nil {
		return err
	}
	st, err := os.Stat(o.Out)
	if err != nil {
		return err
	}
	if o.JSON {
		return o.printJSON(map[string]any{"out": o.Out, "bytes": st.Size(), "header_bytes": h.Len(), "stanzas": stanzaJSON(h.Stanzas), "binding": h.Binding})
	}
	if !o.Quiet {
		fmt.Fprintf(o.Stdout, "encrypted %s -> %s (%d bytes, %d recipients, bound to %q)\n", o.In, o.Out, st.Size(), len(h.Stanzas), h.Binding.String())
	}
	return nil
}

func decryptCommand() *cli.Command {
	return &cli.Command{
		Name:  "decrypt",
		Usage: "decrypt a file; the output appears only after every segment authenticated",
		UsageText: `ehrport decrypt (--keys DIR | --kms URI) --binding PATH [--export-id ID] IN OUT

Example:
   ehrport decrypt --keys ./hospital-keys --binding exports/x/Patient.000.ndjson Patient.000.ndjson.ehr Patient.000.ndjson`,
		Description: `--binding (and --export-id) must name what the file is supposed to be: a file
bound to another path or export is refused as swapped. Plaintext goes to a
temporary file renamed to OUT only after the last segment authenticated; on
any failure nothing is left. Failures exit with status 3: corrupt or
tampered, no matching key (wrong or disabled key), or refused by policy.
` + passphraseHelp,
		Flags: append([]cli.Flag{
			keysDirFlag("decrypt with the KEK and HPKE keys of `DIR`"),
			&cli.StringSliceFlag{Name: "kms", Usage: "decrypt stanzas wrapped by the KMS key `URI` (repeatable)"},
		}, bindingFlags()...),
		Action: func(c *cli.Context) error {
			g, err := globalsFrom(c)
			if err != nil {
				return err
			}
			if c.NArg() != 2 {
				return usagef("decrypt needs IN and OUT")
			}
			b, err := bindingFrom(c)
			if err != nil {
				return err
			}
			return (&decryptOptions{globals: g, Keys: c.String("keys"), KMS: c.StringSlice("kms"), Binding: b,
				In: c.Args().Get(0), Out: c.Args().Get(1)}).Run(c.Context)
		},
	}
}

type decryptOptions struct {
	*globals
	Keys    string
	KMS     []string
	Binding ehrcrypto.Binding
	In, Out string
}

func identitiesFrom(ctx context.Context, dir string, uris []string) ([]ehrcrypto.Identity, error) {
	var ids []ehrcrypto.Identity
	if dir != "" {
		d, err := openKeys(ctx, dir)
		if err != nil {
			return nil, err
		}
		ids = append(ids, d.Identities()...)
	}
	for _, u := range uris {
		a, err := kms.AEAD(ctx, u)
		if err != nil {
			return nil, err
		}
		ids = append(ids, ehrcrypto.NewKMSIdentity(u, a))
	}
	if len(ids) == 0 {
		return nil, usagef("give --keys DIR or --kms URI")
	}
	return ids, nil
}

func (o *decryptOptions) Run(ctx context.Context) error {
	ids, err := identitiesFrom(ctx, o.Keys, o.KMS)
	if err != nil {
		return err
	}
	in, closeIn, err := openIn(o.In)
	if err != nil {
		return err
	}
	defer closeIn()
	h, err := ehrcrypto.DecryptFile(o.Out, in, ids, o.Binding)
	if err != nil {
		return err
	}
	if o.JSON {
		return o.printJSON(map[string]any{"out": o.Out, "binding": h.Binding, "authenticated": true})
	}
	if !o.Quiet {
		fmt.Fprintf(o.Stdout, "decrypted %s -> %s (every segment authenticated)\n", o.In, o.Out)
	}
	return nil
}

func inspectCommand() *cli.Command {
	return &cli.Command{
		Name:  "inspect",
		Usage: "show an encrypted file's header without any key: version, suite, recipients, binding, sizes",
		UsageText: `ehrport inspect FILE

Examples:
   ehrport inspect Patient.000.ndjson.ehr
   ehrport --json inspect Patient.000.ndjson.ehr`,
		Description: `Needs no key. Checks the header grammar and local policy, and whether the
file's length is one a writer produces (a truncated file usually is not).
The commitment and header MAC can only be verified by a key holder (decrypt).
Exit status: 0 consistent, 1 sizes inconsistent, 3 header corrupt or refused.`,
		Action: func(c *cli.Context) error {
			g, err := globalsFrom(c)
			if err != nil {
				return err
			}
			if c.NArg() != 1 {
				return usagef("inspect needs exactly one FILE")
			}
			return (&inspectOptions{globals: g, File: c.Args().First()}).Run(c.Context)
		},
	}
}

type inspectOptions struct {
	*globals
	File string
}

type stanzaOut struct {
	Type      string `json:"type"`
	Role      string `json:"role"`
	KeyID     uint32 `json:"key_id,omitempty"`
	KMS       string `json:"kms_uri,omitempty"`
	BodyBytes int    `json:"wrapped_key_bytes"`
}

func stanzaJSON(ss []ehrcrypto.Stanza) []stanzaOut {
	out := []stanzaOut{}
	for _, s := range ss {
		out = append(out, stanzaOut{Type: ehrcrypto.StanzaTypeName(s.Type), Role: ehrcrypto.RoleName(s.Role), KeyID: s.KeyID, KMS: s.Locator, BodyBytes: len(s.Body)})
	}
	return out
}

func (o *inspectOptions) Run(ctx context.Context) error {
	f, err := os.Open(o.File)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	rep, err := ehrcrypto.Inspect(f, st.Size())
	if err != nil {
		return err
	}
	h := rep.Header
	if o.JSON {
		err = o.printJSON(map[string]any{
			"file": o.File, "version": h.Version, "suite": h.Suite, "suite_name": "AES256_GCM_HKDF_1MB",
			"binding": map[string]string{"export_id": h.Binding.ExportID, "path": h.Binding.Path},
			"stanzas": stanzaJSON(h.Stanzas), "header_bytes": rep.HeaderLen, "object_bytes": rep.ObjectLen,
			"payload_bytes": rep.PayloadLen, "segments": rep.Segments, "plaintext_bytes": rep.PlaintextLen,
			"segment_bytes": ehrcrypto.SegmentSize, "consistent": rep.Consistent, "problems": rep.Problems,
			"commitment_and_mac": "present; verifiable only with a key",
		})
	} else {
		w := o.Stdout
		fmt.Fprintf(w, "file:        %s\n", o.File)
		fmt.Fprintf(w, "format:      ehrport v%d, suite %d (AES256_GCM_HKDF_1MB payload, HPKE X25519 / Tink AEAD / KMS wraps, HMAC-SHA256 header MAC); accepted by local policy\n", h.Version, h.Suite)
		fmt.Fprintf(w, "binding:     export %q, path %q\n", h.Binding.ExportID, h.Binding.Path)
		fmt.Fprintf(w, "sizes:       object %d = header %d + payload %d; %d segment(s) of up to %d bytes; plaintext %d bytes\n",
			rep.ObjectLen, rep.HeaderLen, rep.PayloadLen, rep.Segments, ehrcrypto.SegmentSize, rep.PlaintextLen)
		cons := "yes"
		if !rep.Consistent {
			cons = "NO: " + strings.Join(rep.Problems, "; ")
		}
		fmt.Fprintf(w, "consistent:  %s\n", cons)
		fmt.Fprintf(w, "stanzas:     %d\n", len(h.Stanzas))
		for i, s := range h.Stanzas {
			id := fmt.Sprintf("key %d", s.KeyID)
			if s.Type == ehrcrypto.StanzaKMS {
				id = "kms " + s.Locator
			}
			fmt.Fprintf(w, "  %d  %-12s %-9s %s (%d-byte wrapped key)\n", i, ehrcrypto.StanzaTypeName(s.Type), ehrcrypto.RoleName(s.Role), id, len(s.Body))
		}
		fmt.Fprintf(w, "commitment:  present (verifiable only with a key)\nheader MAC:  present (verifiable only with a key)\n")
	}
	if err != nil {
		return err
	}
	if !rep.Consistent {
		return ErrFindings
	}
	return nil
}
