/*
 * The referral portal's tracking script, for the operator's own pages (docs/integration.md).
 *
 *   <script src="https://PORTAL/static/referrals/track.js" defer></script>
 *
 * On a visit with ?ref=CODE it records the click (POST PORTAL/api/v1/track/click), keeps the code and
 * the click id in a first-party cookie for the attribution window, fills the sign-up form's hidden
 * inputs (name="referral_code", name="referral_click_id") and offers window.Referral.get() and
 * window.Referral.ready(callback). A visit through a redirect link (?ref=CODE&click_id=ID) was
 * counted by the portal already: it is only remembered.
 *
 * Optional attributes of the script tag:
 *   data-api              the portal's address (default: where this script was loaded from)
 *   data-param            the query parameter holding the code (default "ref")
 *   data-template-param   the query parameter holding a template id (default "template")
 *   data-template         the template of this page (a template page may set it instead)
 *   data-cookie-domain    e.g. ".operator.example" to share the cookie with sub-domains
 *   data-attribution      "last" (default: the latest click wins) or "first"
 *   data-window-days      the attribution window for redirect-link visits (default 30)
 *
 * No inline code, no eval, no third-party code, no build step: it runs under a strict
 * Content-Security-Policy that allows this script and connect-src to the portal.
 */
(function () {
  "use strict";

  var script = document.currentScript;
  if (!script || window.Referral) {
    return;
  }
  var COOKIE = "ref_click";
  var VISITOR_COOKIE = "ref_vid";
  var CODE_RE = /^[a-z0-9]{8}$/;
  var CLICK_RE = /^[0-9a-fA-F-]{32,36}$/;

  function attr(name, fallback) {
    var value = script.getAttribute("data-" + name);
    return value === null || value === "" ? fallback : value;
  }

  var api = attr("api", new URL(script.src, location.href).origin).replace(/\/+$/, "");
  var param = attr("param", "ref");
  var templateParam = attr("template-param", "template");
  var cookieDomain = attr("cookie-domain", "");
  var firstWins = attr("attribution", "last") === "first";
  // Only for redirect-link visits (the portal's answer to a recorded click carries the real end).
  var windowDays = parseInt(attr("window-days", "30"), 10) || 30;

  // ------------------------------------------------------------------ cookies

  function readCookie(name) {
    var parts = document.cookie ? document.cookie.split("; ") : [];
    for (var i = 0; i < parts.length; i++) {
      var eq = parts[i].indexOf("=");
      if (parts[i].slice(0, eq) === name) {
        try {
          return decodeURIComponent(parts[i].slice(eq + 1));
        } catch (err) {
          return null;
        }
      }
    }
    return null;
  }

  function writeCookie(name, value, maxAgeSeconds) {
    var cookie = name + "=" + encodeURIComponent(value) + "; Path=/; SameSite=Lax; Max-Age=" +
      Math.max(0, Math.floor(maxAgeSeconds));
    if (cookieDomain) {
      cookie += "; Domain=" + cookieDomain;
    }
    if (location.protocol === "https:") {
      cookie += "; Secure";
    }
    document.cookie = cookie;
  }

  function visitorId() {
    var id = readCookie(VISITOR_COOKIE);
    if (!id || !/^[0-9a-f]{32}$/.test(id)) {
      var bytes = new Uint8Array(16);
      window.crypto.getRandomValues(bytes);
      id = Array.prototype.map.call(bytes, function (b) {
        return (b < 16 ? "0" : "") + b.toString(16);
      }).join("");
    }
    writeCookie(VISITOR_COOKIE, id, 2 * 365 * 24 * 3600); // refreshed on every visit
    return id;
  }

  // ------------------------------------------------------------------ the remembered click

  function stored() {
    var raw = readCookie(COOKIE);
    if (!raw) {
      return null;
    }
    try {
      var data = JSON.parse(raw);
      if (data && CODE_RE.test(data.code) && CLICK_RE.test(data.clickId) && Date.parse(data.expiresAt) > Date.now()) {
        return {code: data.code, clickId: data.clickId, template: data.template || "", expiresAt: data.expiresAt};
      }
    } catch (err) {
      // a cookie that is not ours, or damaged: as if there were none
    }
    return null;
  }

  function remember(click) {
    if (firstWins && stored()) {
      return;
    }
    writeCookie(COOKIE, JSON.stringify(click), (Date.parse(click.expiresAt) - Date.now()) / 1000);
  }

  // ------------------------------------------------------------------ the sign-up form

  function setInputs(root) {
    var click = stored();
    var fields = {referral_code: click ? click.code : "", referral_click_id: click ? click.clickId : "",
                  referral_template: click ? click.template : ""};
    Object.keys(fields).forEach(function (name) {
      var inputs = (root || document).querySelectorAll('input[name="' + name + '"]');
      for (var i = 0; i < inputs.length; i++) {
        if (fields[name] || !inputs[i].value) {
          inputs[i].value = fields[name];
        }
      }
    });
  }

  // ------------------------------------------------------------------ readiness

  var done = false;
  var waiting = [];

  function finish() {
    done = true;
    setInputs();
    var click = stored();
    var callbacks = waiting;
    waiting = [];
    callbacks.forEach(function (callback) {
      try {
        callback(click);
      } catch (err) {
        window.setTimeout(function () { throw err; });
      }
    });
    document.dispatchEvent(new CustomEvent("referral:ready", {detail: click}));
  }

  window.Referral = {
    /** The remembered click ({code, clickId, template, expiresAt}) or null. */
    get: stored,
    /** Calls back with get()'s value once this visit's click (if any) is recorded. */
    ready: function (callback) {
      if (done) {
        callback(stored());
      } else {
        waiting.push(callback);
      }
    },
    /** Forget the remembered click (e.g. once the sign-up succeeded). */
    clear: function () {
      writeCookie(COOKIE, "", 0);
      setInputs();
    },
    /** Fill the hidden inputs of this element (a form added later by a single-page app). */
    fill: setInputs
  };

  // A form rendered after this script ran still gets the click when it is sent.
  document.addEventListener("submit", function (event) {
    setInputs(event.target);
  }, true);

  // ------------------------------------------------------------------ this visit

  var query = new URLSearchParams(location.search);
  var code = (query.get(param) || "").trim().toLowerCase();
  var template = query.get(templateParam) || attr("template", "");
  var givenClick = query.get("click_id") || "";

  function whenDomReady(callback) {
    if (document.readyState === "loading") {
      document.addEventListener("DOMContentLoaded", callback);
    } else {
      callback();
    }
  }

  if (!code) {
    whenDomReady(finish);
  } else if (givenClick) {
    // A redirect link: the portal counted the click and sent its id along.
    if (CODE_RE.test(code) && CLICK_RE.test(givenClick)) {
      remember({code: code, clickId: givenClick, template: template,
                expiresAt: new Date(Date.now() + windowDays * 24 * 3600 * 1000).toISOString()});
    }
    whenDomReady(finish);
  } else if (!window.fetch) {
    whenDomReady(finish);
  } else {
    var body = {code: code, url: location.href, referrer: document.referrer, visitor: visitorId()};
    if (template) {
      body.template = template;
    }
    window.fetch(api + "/api/v1/track/click", {
      method: "POST",
      mode: "cors",
      credentials: "omit",
      keepalive: true,
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify(body)
    }).then(function (response) {
      return response.ok ? response.json() : null;
    }).then(function (answer) {
      if (answer && answer.click_id) {
        remember({code: answer.code, clickId: answer.click_id, template: template, expiresAt: answer.expires_at});
      }
    }).catch(function () {
      // The portal is unreachable or refused the origin: the page works on, nothing is remembered.
    }).then(function () {
      whenDomReady(finish);
    });
  }
})();
