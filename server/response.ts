/**
 * A handler's answer already encoded as the inner response's JSON text
 * (`{"data":…}`) and checked against MAX_INNER_BYTES: the forwarding path
 * encodes an application's answer once, so that one which grows when encoded
 * again (`1e20` is 21 digits) is refused there, as the application's
 * failure, and the connection seals the text as it is.
 */
export class EncodedResponse {
  readonly json: string;
  constructor(json: string) {
    this.json = json;
  }
}
