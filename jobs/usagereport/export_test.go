package usagereport

// WaitForWeekEnd is waitForWeekEnd, for the tests.
var WaitForWeekEnd = waitForWeekEnd
