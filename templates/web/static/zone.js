// The time zone field of the sign-up form and the manage page: when it still holds the service's
// zone (data-prefill), put the browser's own zone there, so "07:00" means the person's morning.
// Without this script the field keeps the service's zone and can be typed in.
(function () {
  "use strict";
  var field = document.querySelector("input[data-prefill=browser]");
  var zone = "";
  try {
    zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
  } catch (e) {
    zone = "";
  }
  if (field && zone && zone.length <= 64) {
    field.value = zone;
  }
})();
