/** Where a page ends: the last row's creation time and id. */
export interface Cursor {
  createdAt: Date;
  id: string;
}

