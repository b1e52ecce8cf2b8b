package ping

import "testing"

func TestValidateRefusesOutOfRangeArgs(t *testing.T) {
	cases := map[string]Args{
		"negative sleep":      {SleepMS: -1},
		"sleep over 30s":      {SleepMS: 30001},
		"negative fail_times": {FailTimes: -2},
	}
	for name, a := range cases {
		if a.Validate() == nil {
			t.Errorf("%s: %+v accepted", name, a)
		}
	}
	if err := (Args{SleepMS: 30000, FailTimes: 3}).Validate(); err != nil {
		t.Errorf("valid args refused: %v", err)
	}
}
