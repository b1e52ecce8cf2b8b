package invoice

import (
	"errors"
	"math"
	"math/big"
	"strings"
	"testing"

	"golang.org/x/text/currency"
)

// ISO 4217's minor units, not CLDR's digits: COP, IDR and PKR have 2 and
// IQD 3 where x/text says 0; MRU, VES and SLE are newer than x/text's data.
func TestExponentsAreISO4217s(t *testing.T) {
	for _, tc := range []struct {
		code string
		want int
	}{
		{"JPY", 0}, {"KRW", 0}, {"ISK", 0}, {"CLP", 0}, {"XOF", 0},
		{"EUR", 2}, {"USD", 2}, {"GBP", 2},
		{"COP", 2}, {"IDR", 2}, {"PKR", 2}, {"MMK", 2}, {"TZS", 2},
		{"IQD", 3}, {"KWD", 3}, {"BHD", 3}, {"TND", 3}, {"JOD", 3},
		{"CLF", 4}, {"UYW", 4},
		{"MRU", 2}, {"VES", 2}, {"VED", 2}, {"SLE", 2}, {"SLL", 2}, {"ZWG", 2}, {"XCG", 2},
		{"cop", 2}, {"iqd", 3}, {"mru", 2}, {"eur", 2},
	} {
		got, err := Exponent(tc.code)
		if err != nil || got != tc.want {
			t.Errorf("Exponent(%s) = %d, %v; want %d", tc.code, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "EU", "EURO", "ABC", "XXX", "xxx", "€", "MR", "MRUU"} {
		if _, err := Exponent(bad); err == nil {
			t.Errorf("Exponent(%q): no error, want an unknown currency", bad)
		}
	}
}

// Every entry of isoExponents changes something: its code is unknown to
// x/text, or x/text's digits differ. An x/text that one day agrees with
// ISO 4217 makes the entry redundant, and this test says so. Exponents
// stay within 0..4, the SQL table's check.
func TestISOExponentsOverrideXText(t *testing.T) {
	for code, exp := range isoExponents {
		if code != strings.ToUpper(code) || len(code) != 3 {
			t.Errorf("%q: want three capital letters", code)
		}
		if exp < 0 || exp > 4 {
			t.Errorf("%s: exponent %d outside 0..4", code, exp)
		}
		u, err := currency.ParseISO(code)
		if err != nil {
			continue // a code x/text lacks
		}
		if cldr, _ := currency.Standard.Rounding(u); cldr == exp {
			t.Errorf("%s: x/text already has %d; the override is redundant", code, exp)
		}
	}
}

func TestFormatAmountAcrossCurrencies(t *testing.T) {
	for _, tc := range []struct {
		minor int64
		code  string
		want  string
	}{
		{0, "EUR", "0.00"},
		{5, "EUR", "0.05"},
		{-5, "EUR", "-0.05"},
		{123456, "EUR", "1,234.56"},
		{100, "USD", "1.00"},
		{123456, "JPY", "123,456"},
		{-1000000, "JPY", "-1,000,000"},
		{1234567, "KWD", "1,234.567"},
		{5, "BHD", "0.005"},
		{12345, "CLF", "1.2345"},
		{999, "EUR", "9.99"},
		// 1,000 pesos as a payment API stores it: 100000 centavos, not
		// 100,000 pesos as CLDR's 0 digits would print it.
		{100000, "COP", "1,000.00"},
		{123456789, "COP", "1,234,567.89"},
		{-5, "COP", "-0.05"},
		// Iraqi dinars have 1,000 fils, like Kuwaiti ones.
		{1234567, "IQD", "1,234.567"},
		{250, "IQD", "0.250"},
		{-250000, "IQD", "-250.000"},
		{150, "MRU", "1.50"},
		{100000, "EUR", "1,000.00"},
		{math.MaxInt64, "EUR", "92,233,720,368,547,758.07"},
		{math.MinInt64, "EUR", "-92,233,720,368,547,758.08"},
	} {
		exp, err := Exponent(tc.code)
		if err != nil {
			t.Fatal(err)
		}
		if got := FormatAmount(tc.minor, exp); got != tc.want {
			t.Errorf("%d %s: got %q, want %q", tc.minor, tc.code, got, tc.want)
		}
	}
}

func TestRoundingIsHalfAwayFromZeroOnExactValues(t *testing.T) {
	for _, tc := range []struct {
		num, den int64
		want     int64
	}{
		{5, 2, 3}, {-5, 2, -3}, {3, 2, 2}, {1, 2, 1}, {-1, 2, -1}, {7, 3, 2}, {-7, 3, -2}, {1, 3, 0}, {4, 1, 4},
		// 0.125 × 10 = 1.25 → 1, not 2: no float can turn it into 1.2500001.
		{125, 100, 1},
	} {
		if got := roundHalfAway(big.NewRat(tc.num, tc.den)); got.Int64() != tc.want {
			t.Errorf("round(%d/%d) = %s, want %d", tc.num, tc.den, got, tc.want)
		}
	}
}

// Tax is rounded once per rate over the whole invoice, not per line: three
// lines of 0.10 at 7 % have 0.021 of tax, 0.02 once rounded (per line it
// would be 3 × 0.01 = 0.03).
func TestTaxIsRoundedOncePerRate(t *testing.T) {
	lines := []Line{
		{Quantity: "1", UnitAmount: 10, TaxRate: "7"},
		{Quantity: "1", UnitAmount: 10, TaxRate: "7.0"},
		{Quantity: "1", UnitAmount: 10, TaxRate: "7.000"},
		{Quantity: "2.5", UnitAmount: 333, TaxRate: "20"}, // 832.5 → 833
		{Quantity: "0.333333", UnitAmount: 3, TaxRate: "0"},
		{Quantity: "1", UnitAmount: -200, TaxRate: "20"}, // a discount line
	}
	got, err := Compute(lines)
	if err != nil {
		t.Fatal(err)
	}
	wantLines := []int64{10, 10, 10, 833, 1, -200}
	for i, w := range wantLines {
		if got.Lines[i] != w {
			t.Errorf("line %d: %d, want %d", i+1, got.Lines[i], w)
		}
	}
	if got.Subtotal != 664 {
		t.Errorf("subtotal %d, want 664", got.Subtotal)
	}
	want := []TaxLine{{Rate: "7", Base: 30, Tax: 2}, {Rate: "20", Base: 633, Tax: 127}}
	if len(got.Taxes) != len(want) || got.Taxes[0] != want[0] || got.Taxes[1] != want[1] {
		t.Errorf("taxes %+v, want %+v", got.Taxes, want)
	}
	if got.Total != 664+2+127 {
		t.Errorf("total %d, want %d", got.Total, 664+2+127)
	}
}

func TestNoItemsTotalZero(t *testing.T) {
	got, err := Compute(nil)
	if err != nil || got.Total != 0 || got.Subtotal != 0 || len(got.Taxes) != 0 {
		t.Errorf("got %+v, %v", got, err)
	}
}

func TestAmountsBeyond64BitsAreRefused(t *testing.T) {
	for name, lines := range map[string][]Line{
		"a line over int64":  {{Quantity: "999999999", UnitAmount: math.MaxInt64, TaxRate: "0"}},
		"a total over int64": {{Quantity: "1", UnitAmount: math.MaxInt64, TaxRate: "0"}, {Quantity: "1", UnitAmount: 1, TaxRate: "0"}},
		"tax over int64":     {{Quantity: "1", UnitAmount: math.MaxInt64, TaxRate: "100"}},
	} {
		if _, err := Compute(lines); !errors.Is(err, ErrOverflow) {
			t.Errorf("%s: got %v, want ErrOverflow", name, err)
		}
	}
}
