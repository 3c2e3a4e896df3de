// Handing a proof token to the application: to the return URL that the
// verification's answer names (the organization's settings.return_url, checked
// when it was saved), never to one the page's own URL could name, and in that
// URL's fragment, which browsers send to no server (nor in a Referer): the token
// is in no access log on the way. The page is replaced, so Back does not return
// to a spent link.

/** The return URL with the fields in its fragment; undefined unless it is an http(s) URL. */
export function handOffUrl(returnUrl: string, fields: Record<string, string>): string | undefined {
  let url: URL;
  try {
    url = new URL(returnUrl);
  } catch {
    return undefined;
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") return undefined;
  url.hash = new URLSearchParams(fields).toString();
  return url.toString();
}

/** Goes to the application with the token; false when the return URL is unusable (the page then says "done" itself). */
export function handOff(returnUrl: string, fields: Record<string, string>): boolean {
  const target = handOffUrl(returnUrl, fields);
  if (!target) return false;
  location.replace(target);
  return true;
}
