// asciinema-player ships no type declarations: the part of its API the player page uses.
declare module "asciinema-player" {
  export interface PlayerOptions {
    speed?: number;
    autoPlay?: boolean;
    controls?: boolean | "auto";
    fit?: "width" | "height" | "both" | false;
    idleTimeLimit?: number;
  }
  export interface Player {
    dispose(): void;
    play(): Promise<void>;
    pause(): void;
    seek(where: number | string): Promise<void>;
    getCurrentTime(): number;
    getDuration(): number;
    addEventListener(name: string, handler: () => void): void;
  }
  export function create(src: string | { url: string }, element: HTMLElement,
                         options?: PlayerOptions): Player;
}
declare module "*.css";
